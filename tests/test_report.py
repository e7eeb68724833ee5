"""Tests for nkd.report: aggregation, grouping, markers, figures, determinism and bad input."""

import csv
import math
import os
import subprocess
import sys

import pytest

from nkd import config as config_lib
from nkd.report import paper_values
from nkd import report
from nkd import run_files
from nkd.config.evaluation import CORRUPTIONS
from nkd.report import __main__ as report_cli
from nkd.report import grouping, loading

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(
    root,
    rel,
    *,
    experiment,
    seed,
    level=None,
    level_name=None,
    test_accuracy=None,
    epochs=200,
    dataset="cifar10",
    options=None,
    pgd=None,
    cifar10_c=None,
    cinic=None,
    ece=None,
    certified=None,
    autoattack=None,
    results=True,
):
  """Writes a run folder as the training code does; returns its path."""
  path = os.path.join(str(root), rel)
  opts = {
      "name": experiment,
      "seed": seed,
      "epochs": epochs,
      "dataset": dataset,
      "mode": "kd",
      "model": "wrn-16-2",
      **(options or {}),
  }
  config = config_lib.Config.from_options(opts)
  run_files.write_json(
      os.path.join(path, run_files.CONFIG),
      {"options": config.to_dict(), "versions": {"jax": "0"}, "device": "cpu"},
  )
  if not results:
    return path
  sections = {}
  if pgd is not None:
    sections["pgd"] = {
        "attack": "pgd",
        "num_examples": 10000,
        "clean_accuracy": test_accuracy,
        "results": [
            {
                "eps": eps,
                "step_size": 0.003,
                "steps": steps,
                "restarts": 5,
                "loss": "ce",
                "clean_accuracy": test_accuracy,
                "robust_accuracy": robust,
                "worst_restart_accuracy": worst,
                "restart_accuracies": [worst] * 5,
            }
            for steps, eps, robust, worst in pgd
        ],
    }
  if cifar10_c is not None:
    sections["cifar10_c"] = {
        "source": "official",
        "num_per_severity": 10000,
        "severities": [1, 2, 3, 4, 5],
        "accuracy": {
            name: {str(s): value for s in range(1, 6)} for name, value in cifar10_c.items()
        },
        "mean_per_corruption": dict(cifar10_c),
    }
  if cinic is not None:
    sections["cinic_imagenet"] = {"status": "ok", "accuracy": cinic, "num_images": 70000}
  else:
    sections["cinic_imagenet"] = {"status": "skipped", "reason": "no data"}
  if ece is not None:
    sections["calibration"] = {
        "accuracy": test_accuracy,
        "ece": ece,
        "ece_num_bins": 15,
        "ece_units": "percent",
        "nll": 0.2,
        "num_examples": 10000,
    }
  if autoattack is not None:
    sections["autoattack"] = {
        "version": "standard",
        "eps": [0.031],
        "results": [
            {
                "eps": 0.031,
                "version": "standard",
                "robust_accuracy": autoattack,
                "clean_accuracy": test_accuracy,
                "masking_check": {"suspicious": False, "flags": []},
            }
        ],
    }
  if certified is not None:
    sections["smoothing"] = {
        "method": "certify",
        "sigma": 0.25,
        "n0": 100,
        "n": 100000,
        "alpha": 0.001,
        "certified_accuracy": dict(certified),
        "abstain_rate": 10.0,
        "mean_radius_correct": 0.4,
    }
  run_files.write_results(
      path,
      run_files.RunResults(
          experiment=experiment,
          seed=seed,
          mode=config.mode,
          model=config.model,
          dataset=dataset,
          epochs=epochs,
          steps=epochs * 391,
          test_accuracy=test_accuracy,
          params_sha256="x",
          wall_time_s=1.0,
          level_name=level_name,
          level=level,
          **sections,
      ),
  )
  return path


def read_csv(out):
  with open(os.path.join(out, "summary.csv"), newline="") as f:
    return list(csv.DictReader(f))


def read(out, name):
  with open(os.path.join(out, name), encoding="utf-8") as f:
    return f.read()


def run_cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run(
      [sys.executable, "-m", "nkd.report", *args],
      capture_output=True,
      text=True,
      env=env,
      cwd=REPO_ROOT,
      timeout=120,
  )


def softrand(root, rel, seed, level, acc, **kwargs):
  return write_run(
      root,
      rel,
      experiment="softrand",
      seed=seed,
      level=level,
      level_name="input_noise_sigma",
      test_accuracy=acc,
      **kwargs,
  )


# ---------------------------------------------------------------------------------------------
# Aggregation and grouping.


def test_mean_std_is_the_sample_std():
  stat = grouping.mean_std([93.0, 94.0, 95.5])
  # mean 282.5 / 3; squared deviations 1.36111 + 0.02778 + 1.77778 = 3.16667; / (3 - 1).
  assert stat.mean == pytest.approx(94.1666667)
  assert stat.std == pytest.approx(1.2583057)  # population std would be 1.0274
  assert stat.n == 3
  assert grouping.mean_std([93.0]).std is None


def test_summary_aggregates_hand_computed_values(tmp_path):
  runs = tmp_path / "runs"
  for seed, acc, cinic, ece in ((0, 93.0, 69.0, 2.0), (10, 94.0, 70.0, 3.0), (20, 95.5, 71.5, 5.0)):
    softrand(
        runs,
        f"s{seed}",
        seed,
        0.05,
        acc,
        cinic=cinic,
        ece=ece,
        pgd=[(20, 0.031, 30.0 + seed / 10, 31.0)],
    )
  out = str(tmp_path / "out")
  assert report_cli.main([str(runs), f"--out={out}", "--no-figures"]) == 0
  (row,) = read_csv(out)
  assert row["experiment"] == "softrand" and row["level"] == "0.05" and row["n"] == "3"
  assert row["seeds"] == "0;10;20" and row["missing_seeds"] == "" and row["fewer_seeds"] == ""
  assert row["test_accuracy_mean"] == "94.166667"
  assert row["test_accuracy_std"] == "1.258306"
  assert row["cinic_accuracy_mean"] == "70.166667"
  assert float(row["cinic_accuracy_std"]) == pytest.approx(
      math.sqrt((1.36111 + 0.02778 + 1.77778) / 2), abs=1e-4
  )
  assert row["pgd20_eps0.031_robust_mean"] == "31.000000"  # (30 + 31 + 32) / 3
  assert row["pgd20_eps0.031_robust_std"] == "1.000000"
  assert row["ece_mean"] == "3.333333" and row["ece_n"] == "3"
  # Metrics no run has are still columns, empty, with a count of 0.
  assert row["cifar10_c_mean_15_mean"] == "" and row["cifar10_c_mean_15_n"] == "0"
  md = read(out, "summary.md")
  assert "94.17 ± 1.26" in md
  assert "ddof=1" in md
  assert "3.33 ± 1.53" in md  # ECE in percent, 2 decimals; sample std of (2, 3, 5)


def test_groups_by_experiment_and_level_in_sorted_order(tmp_path):
  runs = tmp_path / "runs"
  softrand(runs, "sr_0.1_s0", 0, 0.1, 90.0)
  softrand(runs, "sr_0.05_s0", 0, 0.05, 92.0)
  softrand(runs, "sr_0.05_s10", 10, 0.05, 94.0)
  write_run(runs, "hinton_s0", experiment="hinton", seed=0, test_accuracy=94.5)
  out = str(tmp_path / "out")
  assert report_cli.main([str(runs), "--out", out, "--no-figures"]) == 0
  rows = [(r["experiment"], r["level"], r["n"], r["test_accuracy_mean"]) for r in read_csv(out)]
  assert rows == [
      ("hinton", "", "1", "94.500000"),
      ("softrand", "0.05", "2", "93.000000"),
      ("softrand", "0.1", "1", "90.000000"),
  ]


def test_one_seed_has_no_std(tmp_path):
  runs = tmp_path / "runs"
  write_run(runs, "h", experiment="hinton", seed=0, test_accuracy=94.25)
  out = str(tmp_path / "out")
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  (row,) = read_csv(out)
  assert row["test_accuracy_mean"] == "94.250000" and row["test_accuracy_std"] == ""
  assert "94.25 ± –" in read(out, "summary.md")


def test_missing_seeds_are_marked_and_listed(tmp_path):
  runs = tmp_path / "runs"
  for seed in (0, 10, 20):
    softrand(runs, f"a_{seed}", seed, 0.05, 93.0)
  for seed in (0, 10):
    softrand(runs, f"b_{seed}", seed, 0.1, 92.0)
  out = str(tmp_path / "out")
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  full, short = read_csv(out)
  assert (full["level"], full["missing_seeds"], full["fewer_seeds"]) == ("0.05", "", "")
  assert (short["level"], short["missing_seeds"], short["fewer_seeds"]) == ("0.1", "20", "†")
  md = read(out, "summary.md")
  assert "| 2 † | 0,10 |" in md
  assert "| 3 | 0,10,20 |" in md
  assert "- softrand input_noise_sigma=0.1: 20" in md


def test_missing_metrics_show_as_dash_and_partial_counts(tmp_path):
  runs = tmp_path / "runs"
  softrand(runs, "a0", 0, 0.05, 93.0, cinic=70.0)
  softrand(runs, "a10", 10, 0.05, 94.0, cinic=None)
  softrand(runs, "b0", 0, 0.1, 92.0)
  out = str(tmp_path / "out")
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  partial, none = read_csv(out)
  assert partial["cinic_accuracy_n"] == "1" and partial["cinic_accuracy_mean"] == "70.000000"
  assert none["cinic_accuracy_n"] == "0" and none["cinic_accuracy_mean"] == ""
  md = read(out, "summary.md")
  assert "70.00 ± – (n=1)" in md
  assert "CINIC ImageNet acc. missing for seed(s) 10" in md
  softrand_rows = [line for line in md.splitlines() if line.startswith("| – | input_noise")]
  assert len(softrand_rows) == 2
  assert all(" – |" in line for line in softrand_rows)  # the PGD / C10-C cells show a dash


def test_variant_options_split_an_experiment(tmp_path):
  runs = tmp_path / "runs"
  softrand(runs, "kd0", 0, 0.05, 93.0, options={"mode": "kd"})
  softrand(runs, "ce0", 0, 0.05, 80.0, options={"mode": "ce"})
  out = str(tmp_path / "out")
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  rows = [(r["variant"], r["test_accuracy_mean"]) for r in read_csv(out)]
  assert rows == [("mode=ce", "80.000000"), ("mode=kd", "93.000000")]


def test_cifar10_c_means_computed_from_per_corruption_when_absent(tmp_path):
  runs = tmp_path / "runs"
  cifar10_c = {name: 50.0 + i for i, name in enumerate(CORRUPTIONS)}
  write_run(runs, "h", experiment="hinton", seed=0, test_accuracy=94.0, cifar10_c=cifar10_c)
  out = str(tmp_path / "out")
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  (row,) = read_csv(out)
  assert float(row["cifar10_c_mean_15_mean"]) == pytest.approx(50.0 + 7.0)  # mean of 0..14
  assert float(row["cifar10_c_mean_19_mean"]) == pytest.approx(50.0 + 9.0)  # mean of 0..18
  assert row["cifar10_c_source"] == "official"


def test_recursive_search_names_runs_relative_and_skips_checkpoints(tmp_path):
  runs = tmp_path / "runs"
  path = softrand(runs / "sweep", "s0", 0, 0.05, 93.0)
  os.makedirs(os.path.join(path, "ckpt"))
  softrand(os.path.join(path, "ckpt"), "inner", 5, 0.05, 10.0)  # not a run: inside a run
  softrand(runs / "other", "s10", 10, 0.05, 95.0)
  out = str(tmp_path / "out")
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  (row,) = read_csv(out)
  assert row["seeds"] == "0;10" and row["test_accuracy_mean"] == "94.000000"
  # Runs are named relative to the common parent in the warnings too.
  softrand(runs / "other", "s10b", 10, 0.05, 95.0)
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  md = read(out, "summary.md")
  assert "other/s10, other/s10b" in md
  assert str(tmp_path) not in md


# ---------------------------------------------------------------------------------------------
# Figures.


def full_fixture(root):
  """Runs with data for every figure."""
  cifar10_c = {name: 60.0 + i for i, name in enumerate(CORRUPTIONS)}
  for seed in (0, 10):
    write_run(
        root,
        f"hinton/s{seed}",
        experiment="hinton",
        seed=seed,
        test_accuracy=94.5,
        cinic=69.5,
        pgd=[(5, 0.031, 3.0, 3.3), (20, 0.031, 0.1, 0.2)],
        cifar10_c=cifar10_c,
        ece=0.03,
    )
    for level in (0.05, 0.1):
      softrand(
          root,
          f"softrand/{level}/s{seed}",
          seed,
          level,
          93.0 - level * 10 + seed / 100,
          cinic=68.0,
          pgd=[(5, 0.031, 30.0, 32.0), (20, 0.031, 20.0, 22.0)],
          cifar10_c=cifar10_c,
          ece=0.02,
      )
    for mode in ("T", "S", "TS"):
      for fixed in (False, True):
        for p in (0.05, 0.1):
          write_run(
              root,
              f"ln_{mode}_{fixed}/{p}/s{seed}",
              experiment=f"label_noise_{mode}",
              seed=seed,
              level=p,
              level_name="label_noise_p",
              test_accuracy=94.0 - p * 10,
              options={"label_noise_mode": mode, "label_noise_fixed": fixed},
          )
    for swap in ("top2", "all"):
      for p in (0.25, 0.5):
        write_run(
            root,
            f"swap_{swap}/{p}/s{seed}",
            experiment="swap",
            seed=seed,
            level=p,
            level_name="swap_p",
            test_accuracy=94.0 - p,
            options={"swap_mode": swap},
        )


def check_png(path):
  with open(path, "rb") as f:
    data = f.read()
  assert len(data) > 1000 and data[:8] == PNG_SIGNATURE, path


def check_pdf(path):
  with open(path, "rb") as f:
    data = f.read()
  assert len(data) > 1000 and data.startswith(b"%PDF"), path


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
  """The report, figures included, of `full_fixture`: (runs folder, out folder, files written)."""
  root = tmp_path_factory.mktemp("full")
  full_fixture(root / "runs")
  out = str(root / "out1")
  return root / "runs", out, report.write_report([str(root / "runs")], out)


def test_every_figure_is_written_as_png_and_pdf(full_report):
  _, out, written = full_report
  expected = [
      "fig_accuracy_softrand",
      "fig_accuracy_label_noise_T",
      "fig_accuracy_swap",
      "fig_pgd_softrand",
      "fig_pgd_hinton",
      "fig_cifar10_c_softrand",
      "fig_cifar10_c_hinton",
      "fig_cifar10_c_relative_hinton",
      "fig_label_corruption",
      "fig_label_corruption_fixed",
      "fig_swap",
  ]
  for stem in expected:
    check_png(os.path.join(out, stem + ".png"))
    check_pdf(os.path.join(out, stem + ".pdf"))
    assert stem + ".png" in written and stem + ".pdf" in written
  # No data, no figure: hinton has no noise level; the label-noise runs have no PGD or C10-C.
  for stem in ("fig_accuracy_hinton", "fig_pgd_label_noise_T", "fig_cifar10_c_swap__swap_mode_all"):
    assert not os.path.exists(os.path.join(out, stem + ".png")), stem
  assert sorted(f for f in os.listdir(out) if f.startswith("fig_")) == sorted(
      f for f in written if f.startswith("fig_")
  )


def test_figures_need_their_data(tmp_path):
  runs = tmp_path / "runs"
  softrand(runs, "s0", 0, 0.05, 93.0)  # no PGD, no CIFAR-10-C, no label noise, no swaps
  out = str(tmp_path / "out")
  written = report.write_report([str(runs)], out)
  assert [f for f in written if f.startswith("fig_")] == [
      "fig_accuracy_softrand.png",
      "fig_accuracy_softrand.pdf",
  ]


# ---------------------------------------------------------------------------------------------
# Determinism.


def test_outputs_are_byte_identical_for_the_same_inputs(full_report, tmp_path):
  runs, out1, written1 = full_report
  out2 = str(tmp_path / "out2")
  # Same runs, given in another order and through their parent folders.
  written2 = report.write_report([str(runs / "swap_all"), str(runs / "softrand"), str(runs)], out2)
  assert written1 == written2
  for name in ("summary.md", "summary.csv", "paper_comparison.md"):
    with open(os.path.join(out1, name), "rb") as f1, open(os.path.join(out2, name), "rb") as f2:
      data = f1.read()
      assert data == f2.read(), name
    assert str(runs.parent).encode() not in data, name
  for name in written1:
    if name.startswith("fig_"):
      with open(os.path.join(out1, name), "rb") as f1, open(os.path.join(out2, name), "rb") as f2:
        assert f1.read() == f2.read(), name


# ---------------------------------------------------------------------------------------------
# Ours vs the paper.


def test_paper_values_follow_their_schema():
  paper_values.validate()
  assert paper_values.PAPER_VALUES["hinton_pgd20"]["value"] == 0.20
  assert paper_values.PAPER_VALUES["hinton_test_accuracy"]["value"] == (94.0, 95.0)
  with pytest.raises(ValueError):
    paper_values.validate(
        {"bad": {"quantity": "q", "value": (2.0, 1.0), "metric": "pgd", "match": [], "source": "s"}}
    )


def test_paper_comparison_lists_only_what_we_have(tmp_path):
  runs = tmp_path / "runs"
  for seed, acc in ((0, 95.0), (10, 96.0)):
    write_run(
        runs,
        f"h{seed}",
        experiment="hinton",
        seed=seed,
        test_accuracy=acc,
        pgd=[(20, 0.031, 0.5, 0.6 + seed / 100)],
    )
  out = str(tmp_path / "out")
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  md = read(out, "paper_comparison.md")
  lines = md.splitlines()
  (acc_row,) = [l for l in lines if l.startswith("| Hinton KD student (WRN-16-2) CIFAR-10")]
  assert "| 94.00–95.00 | 95.50 ± 0.71 | 2 | +0.50 (above the range) |" in acc_row
  (robust,) = [l for l in lines if "PGD-20 ε=0.031 robust_accuracy" in l]
  assert "| 0.20 | 0.50 ± – | 2 |" not in robust  # two seeds: a std exists
  assert "| 0.20 | 0.50 ± 0.00 | 2 | +0.30 |" in robust
  (worst,) = [l for l in lines if "PGD-20 ε=0.031 worst_restart_accuracy" in l]
  assert "| 0.20 | 0.65 ± 0.07 | 2 | +0.45 |" in worst
  # Quantities we lack are not rows: no PGD-10 row, no CINIC row, no softrand row.
  assert not any("PGD-10 " in l for l in lines if l.startswith("| "))
  assert not any(l.startswith("| Hinton KD student CINIC") for l in lines)
  assert "- softrand_0.05_pgd:" in md and "- hinton_pgd10:" in md


def test_paper_cifar10_c_values_are_compared_relative_to_clean(tmp_path):
  runs = tmp_path / "runs"
  cifar10_c = {"gaussian_noise": 40.0, "brightness": 76.0}
  write_run(runs, "h", experiment="hinton", seed=0, test_accuracy=80.0, cifar10_c=cifar10_c)
  out = str(tmp_path / "out")
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  md = read(out, "paper_comparison.md")
  (row,) = [l for l in md.splitlines() if "relative to clean, gaussian_noise" in l]
  assert "| 42.80 | 50.00 ± – | 1 | +7.20 |" in row  # 40 / 80 x 100, not the absolute 40
  assert "relative to clean (corrupted / clean x 100)" in row
  (row,) = [l for l in md.splitlines() if "relative to clean, brightness" in l]
  assert "| 97.20 | 95.00 ± – | 1 | -2.20 |" in row


def test_paper_comparison_range_inside(tmp_path):
  runs = tmp_path / "runs"
  write_run(runs, "h", experiment="hinton", seed=0, test_accuracy=94.4)
  out = str(tmp_path / "out")
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  assert "| 94.40 ± – | 1 | 0.00 (within the range) |" in read(out, "paper_comparison.md")


# ---------------------------------------------------------------------------------------------
# Bad input.


def test_missing_results_warns_and_skips(tmp_path, capsys):
  runs = tmp_path / "runs"
  softrand(runs, "done", 0, 0.05, 93.0)
  softrand(runs, "crashed", 10, 0.05, 0.0, results=False)
  out = str(tmp_path / "out")
  assert report_cli.main([str(runs), "--out", out, "--no-figures"]) == 0
  err = capsys.readouterr().err
  assert "warning" in err and os.path.join(str(runs), "crashed") in err
  assert "without results.json" in err
  (row,) = read_csv(out)
  assert row["seeds"] == "0"


def test_missing_folder_argument_warns(tmp_path, capsys):
  runs = tmp_path / "runs"
  softrand(runs, "done", 0, 0.05, 93.0)
  missing = str(tmp_path / "nope")
  assert report_cli.main([str(runs), missing, "--out", str(tmp_path / "out"), "--no-figures"]) == 0
  assert f"{missing}: no such folder" in capsys.readouterr().err


def test_no_usable_run_exits_nonzero_with_one_line(tmp_path):
  runs = tmp_path / "runs"
  softrand(runs, "crashed", 0, 0.05, 0.0, results=False)
  result = run_cli(str(runs), f"--out={tmp_path / 'out'}")
  assert result.returncode != 0
  err_lines = [l for l in result.stderr.splitlines() if "error" in l]
  assert len(err_lines) == 1 and "no usable run" in err_lines[0]
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "out" / "summary.md")


def test_unreadable_json_is_an_error_naming_the_file(tmp_path):
  runs = tmp_path / "runs"
  path = softrand(runs, "bad", 0, 0.05, 93.0)
  with open(os.path.join(path, "results.json"), "w") as f:
    f.write('{"experiment": "softrand", ')
  result = run_cli(str(runs), f"--out={tmp_path / 'out'}")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith("nkd.report: error:") and os.path.join(path, "results.json") in line


def test_cli_writes_the_tables(tmp_path):
  runs = tmp_path / "runs"
  softrand(runs, "s0", 0, 0.05, 93.0)
  result = run_cli(str(runs), f"--out={tmp_path / 'out'}", "--no-figures")
  assert result.returncode == 0, result.stderr
  assert read(str(tmp_path / "out"), "summary.csv").startswith("experiment,variant,")


def test_incompatible_epochs_warn_naming_runs_and_split(tmp_path, capsys):
  runs = tmp_path / "runs"
  softrand(runs, "long0", 0, 0.05, 93.0, epochs=200)
  softrand(runs, "long10", 10, 0.05, 94.0, epochs=200)
  softrand(runs, "short20", 20, 0.05, 80.0, epochs=100)
  softrand(runs, "other0", 0, 0.1, 90.0, epochs=200)
  out = str(tmp_path / "out")
  assert report_cli.main([str(runs), "--out", out, "--no-figures"]) == 0
  err = capsys.readouterr().err
  (line,) = [l for l in err.splitlines() if "differ in epochs" in l]
  assert "epochs=100: short20" in line and "epochs=200: long0, long10" in line
  rows = [(r["variant"], r["level"], r["n"], r["test_accuracy_mean"]) for r in read_csv(out)]
  # Every group of the experiment carries the label, so the figure lines stay consistent.
  assert rows == [
      ("epochs=100", "0.05", "1", "80.000000"),
      ("epochs=200", "0.05", "2", "93.500000"),
      ("epochs=200", "0.1", "1", "90.000000"),
  ]
  assert "runs differ in epochs" in read(out, "summary.md")


def test_incompatible_pgd_eps_and_dataset_are_split(tmp_path, capsys):
  runs = tmp_path / "runs"
  softrand(runs, "a", 0, 0.05, 93.0, pgd=[(20, 0.031, 1.0, 1.0)])
  softrand(runs, "b", 10, 0.05, 93.0, pgd=[(20, 8 / 255, 2.0, 2.0)])
  softrand(runs, "c", 0, 0.1, 93.0, dataset="cifar10")
  softrand(runs, "d", 10, 0.1, 93.0, dataset="cinic10")
  out = str(tmp_path / "out")
  report_cli.main([str(runs), "--out", out, "--no-figures"])
  err = capsys.readouterr().err
  (pgd_line,) = [l for l in err.splitlines() if "differ in pgd20_eps" in l]
  assert "pgd20_eps=0.031: a" in pgd_line and "pgd20_eps=0.031373: b" in pgd_line
  (ds_line,) = [l for l in err.splitlines() if "differ in dataset" in l]
  assert "dataset=cifar10: c" in ds_line and "dataset=cinic10: d" in ds_line
  variants = [r["variant"] for r in read_csv(out)]
  assert len(variants) == 4 and len(set(variants)) == 4


def test_certified_accuracy_figure_alone_and_distilled(tmp_path):
  runs, out = tmp_path / "runs", tmp_path / "out"
  curve = lambda top: {"0.0": top, "0.25": top - 20, "0.5": top - 40}  # noqa: E731
  for seed, top in ((0, 70.0), (1, 72.0)):
    write_run(
        runs,
        f"a{seed}",
        experiment="smoothing_alone",
        seed=seed,
        level=0.25,
        level_name="input_noise_sigma",
        test_accuracy=80.0,
        certified=curve(top),
        options={"mode": "ce", "input_noise_sigma": 0.25},
    )
    write_run(
        runs,
        f"d{seed}",
        experiment="smoothing",
        seed=seed,
        level=0.25,
        level_name="input_noise_sigma",
        test_accuracy=82.0,
        certified=curve(top + 4),
        options={"input_noise_sigma": 0.25, "teacher_flagfile": "t.flags"},
    )
  written = report.write_report([str(runs)], str(out))
  assert "fig_certified.png" in written and "fig_certified.pdf" in written
  groups, _ = grouping.group_runs(loading.load_runs([str(runs)]))
  distilled = [g for g in groups if g.experiment == "smoothing"][0]
  assert distilled.stat(("certified", 0.25)).mean == pytest.approx(55.0)


def test_autoattack_beside_pgd_in_the_table_and_a_figure(tmp_path):
  runs, out = tmp_path / "runs", tmp_path / "out"
  for seed in (0, 1):
    for level, pgd_robust, aa in ((0.05, 30.0, 20.0), (0.1, 40.0, 25.0)):
      write_run(
          runs,
          f"s{level}_{seed}",
          experiment="softrand",
          seed=seed,
          level=level,
          level_name="input_noise_sigma",
          test_accuracy=90.0,
          pgd=[(20, 0.031, pgd_robust + seed, pgd_robust + seed)],
          autoattack=aa + seed,
      )
  written = report.write_report([str(runs)], str(out))
  assert "fig_robustness_softrand.png" in written
  header = read(out, "summary.md").splitlines()
  table = "\n".join(header)
  assert "PGD-20 ε=0.031" in table and "AutoAttack ε=0.031" in table
  assert table.index("PGD-20 ε=0.031") < table.index("AutoAttack ε=0.031")
  rows = read_csv(out)
  assert sorted(float(r["autoattack_eps0.031_mean"]) for r in rows) == [20.5, 25.5]
