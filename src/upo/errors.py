"""The one exception type the CLI turns into a single clear line and exit code 2."""

from __future__ import annotations

from collections.abc import Callable


class UpoError(Exception):
    """A user-facing error: bad input file, bad config, incompatible checkpoint.

    The message must be one line that names what is wrong (file, line, field) and why.
    """


class SettingError(UpoError):
    """An error that names settings (upo.evaluation.EvalSettings fields): a bad value, or the
    setting that would fix it. `wording(name)` builds the message, spelling each setting as
    name(field) spells it. The message itself names the fields (`pass_at must be at least 1`);
    `upo eval` shows worded(its flag spelling) (`--pass-at must be at least 1`): a library
    function cannot know which command line, if any, its settings came from."""

    def __init__(self, wording: Callable[[Callable[[str], str]], str]):
        self.wording = wording
        super().__init__(wording(lambda field: field))

    def worded(self, name: Callable[[str], str]) -> str:
        return self.wording(name)

    @classmethod
    def check(cls, check: Callable, value, field: str) -> None:
        """check(value, name), a check that raises a UpoError naming `name` (check_seed,
        check_dir_target), as a SettingError of `field`."""
        try:
            check(value, field)
        except UpoError:

            def wording(name: Callable[[str], str]) -> str:
                try:
                    check(value, name(field))
                except UpoError as err:
                    return str(err)
                raise AssertionError("a check that failed once passed")  # checks are pure

            raise cls(wording) from None
