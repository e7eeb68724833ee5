"""`--help` of every entry point lists the program's own options by area, each with its default;
`--helpfull` adds absl's; an unknown option is one line with a "did you mean", exit status 2."""

import pytest
from absl import flags

from helpers import run_module

from benchmarks import bench, layers
from nkd import cli
from nkd.sweep import __main__ as sweep
from nkd.report import __main__ as report_cli


def test_nkd_main_help_lists_its_options_by_area():
  proc = run_module("nkd.main", ["--help"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  areas = [out.index(f"\n{area}:\n") for area in cli.GROUPS]
  assert areas == sorted(areas), "the areas in their order"
  for option in (
      "--seed=0 ",
      "--model=wrn-16-2 ",
      "--epochs=200 ",
      "--alpha=0.9 ",
      "--input_noise_sigma=0.0 ",
      "--pgd_preset=paper ",
      "--tensorboard=true ",
  ):
    assert option in out, option
  assert out.index("--model=") < areas[2] < out.index("--tau=") < areas[3]
  assert "--verbosity" not in out and "--helpfull" in out  # absl's flags: --helpfull only
  full = run_module("nkd.main", ["--helpfull"])
  assert full.returncode == 0 and "--verbosity" in full.stdout and "--seed=0 " in full.stdout


def test_nkd_evaluate_help_lists_the_evaluation_options():
  proc = run_module("nkd.evaluate", ["--help"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "--workdir " in proc.stdout and "\nevaluation:\n" in proc.stdout
  assert "--pgd_restarts=5 " in proc.stdout and "--seed=" not in proc.stdout


@pytest.mark.parametrize(
    "main,options",
    [
        (sweep.main, ("--flagfile ", "--grid=", "--parallel=1 ", "--task_index ")),
        (report_cli.main, ("--out ", "--no-figures=false ")),
        (bench.main, ("--quick=false ", "--only=", "--json=", "--gpu_deterministic=true ")),
        (layers.main, ("--only=", "--batch=128 ", "--repeats=5 ", "--json=")),
    ],
)
def test_own_flag_programs_list_their_options(capsys, main, options):
  assert main(["--help"]) == 0
  out = capsys.readouterr().out
  for option in options:
    assert f"\n  {option}" in out, option
  assert "other options:" not in out  # every option of the program is in one of its areas
  assert main(["--helpfull"]) == 0


def test_an_option_left_out_of_the_areas_is_still_listed():
  flag_values = flags.FlagValues()
  flags.DEFINE_integer(
      "listed", 1, "Listed. More text.", flag_values=flag_values, module_name="nkd.x"
  )
  flags.DEFINE_string("forgotten", "a", "Forgotten.", flag_values=flag_values, module_name="nkd.x")
  flags.DEFINE_bool(
      "libraries", False, "A library's.", flag_values=flag_values, module_name="absl.logging"
  )
  out = cli.help_text("doc", flag_values, [("area", ["listed"])])
  assert out.splitlines()[2:6] == [
      "area:",
      "  --listed=1".ljust(32) + "Listed.",
      "",
      "other options:",
  ]
  assert "--forgotten=a " in out and "--libraries" not in out
  full = cli.help_text("doc", flag_values, [("area", ["listed"])], full=True)
  assert "Listed. More text." in full and "--[no]libraries" in full


@pytest.mark.parametrize(
    "module,args,line",
    [
        ("nkd.main", ["--epoch=3"], "nkd: error: unknown option --epoch (did you mean --epochs?)"),
        (
            "nkd.main",
            ["--noaugmnt"],
            "nkd: error: unknown option --noaugmnt (did you mean --noaugment?)",
        ),
        (
            "nkd.evaluate",
            ["--pgd_step=3"],
            "nkd: error: unknown option --pgd_step (did you mean --pgd_steps?)",
        ),
    ],
)
def test_an_unknown_option_gets_a_did_you_mean(module, args, line):
  proc = run_module(module, args)
  assert proc.returncode == 2
  assert proc.stderr.strip() == line


def test_no_suggestion_where_nothing_is_close(capsys):
  assert report_cli.main(["--zzz", "runs"]) == 2
  assert capsys.readouterr().err.strip() == "nkd.report: error: unknown option --zzz"


def test_first_sentence_keeps_abbreviations_and_numbers():
  assert cli.first_sentence("Use e.g. 0.9/N here. Then more.") == "Use e.g. 0.9/N here."
  assert cli.first_sentence("No period at the end") == "No period at the end"
