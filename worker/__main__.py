"""``python -m worker`` is ``limechat-events``."""

from worker.cli import main

main()
