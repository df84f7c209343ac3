"""``python -m panda_chat.cli``: the ``panda-chat`` command without the installed script (e.g. from a checkout)."""

from panda_chat.cli import main

main(prog_name="panda-chat")
