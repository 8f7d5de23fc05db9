"""README's benchmark rows are the figures in bench/results
(tools/readme_figures.py regenerates them)."""
import importlib.util
import os

from tests.support import layout

SCRIPT = os.path.join(layout.REPO, "tools", "readme_figures.py")


def _module():
    spec = importlib.util.spec_from_file_location("readme_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_rows_agree_with_bench_results(capsys):
    assert _module().main(["--check"]) == 0, capsys.readouterr().err


def test_a_drifted_figure_is_found_and_rewritten():
    module = _module()
    with open(module.README) as handle:
        text = handle.read()
    drifted = text.replace("| `bench_pack` | RPM build", "| `bench_pack` | "
                           "RPM build 9.9 s, was", 1)
    assert drifted != text
    fixed, changed = module.regenerate(drifted)
    assert len(changed) == 1 and fixed == module.regenerate(text)[0]


def test_every_benchmark_row_but_diag_is_generated():
    module = _module()
    with open(module.README) as handle:
        names = [line.split("|")[1].strip().split(":")[0]
                 for line in handle if line.startswith("| `bench_")]
    assert names and sorted(n for n in names if n != "`bench_diag`") == \
        sorted(module.ROWS)
