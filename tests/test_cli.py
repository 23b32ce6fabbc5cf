from toolchain import __version__
from toolchain.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"stack {__version__}"


def test_unknown_command_is_one_line_and_nonzero(capsys):
    assert main(["no-such-command"]) != 0
