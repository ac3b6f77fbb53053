import subprocess
import sys

import pytest

from emotion.cli import COMMANDS, _command_of, build_parser


def test_command_word_skips_global_option_values():
    assert _command_of(["--stack-name", "demo", "stack", "up"]) == "stack"
    assert _command_of(["--home=/x", "serve", "text_encoder"]) == "serve"
    assert _command_of(["--help"]) is None


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_every_command_builds_its_arguments_and_help(name, capsys):
    parser = build_parser(name)
    with pytest.raises(SystemExit) as done:
        parser.parse_args([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: emotion {name}") and len(out.splitlines()) > 4
    command = next(c for c in COMMANDS if c.name == name)
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[name]
    assert sub.description and sub.description != command.help, f"{command.module} describes {name} itself"


def test_top_level_help_lists_every_command_without_importing_torch():
    code = (
        "import sys; from emotion.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'emotion --help imported torch'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for c in COMMANDS:
        assert c.name in out
