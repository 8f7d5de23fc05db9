# The C module behind `signal` (the udev helper imports it directly: the
# `signal` wrapper's enums cost its start-up). Only what netoffload uses.
from typing import Any, Callable, Union

SIGALRM: int
SIGPIPE: int
SIGXFSZ: int
SIG_DFL: int

def alarm(seconds: int) -> int: ...
def signal(signalnum: int, handler: Union[Callable[[int, Any], Any], int, None]) -> Any: ...
