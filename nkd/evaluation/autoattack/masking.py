"""Gradient-masking check: the warning signs of Athalye, Carlini & Wagner (2018) and Carlini et
al. (2019), as flags with the numbers behind them (docs/EVALUATION.md lists them).

`masking_check` is a pure function of robust accuracies already measured (percent); checks
whose inputs are missing are skipped and not listed in "checked".
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

DEFAULT_MARGIN = 2.0


def _accuracy(entry: Mapping[str, Any]) -> float:
  for name in ("accuracy", "robust_accuracy"):
    if name in entry:
      return float(entry[name])
  raise ValueError(f"no accuracy in {dict(entry)}")


def _pairs(large_eps_accuracy) -> list[tuple[float, float]]:
  if isinstance(large_eps_accuracy, Mapping):
    if "eps" in large_eps_accuracy and "accuracy" in large_eps_accuracy:  # an eps_sweep result
      return list(
          zip(map(float, large_eps_accuracy["eps"]), map(float, large_eps_accuracy["accuracy"]))
      )
    return [(float(e), float(a)) for e, a in large_eps_accuracy.items()]
  return [(float(e), float(a)) for e, a in large_eps_accuracy]


def pgd_budget_from_result(pgd_result: Mapping[str, Any]) -> list[dict]:
  """{"steps", "restarts", "accuracy"} entries from an `evaluate_pgd`-style result: each
  (eps, steps) setting with all its restarts, and with its first restart alone."""
  out = []
  for r in pgd_result.get("results", []):
    out.append(
        {
            "eps": r.get("eps"),
            "steps": int(r["steps"]),
            "restarts": int(r["restarts"]),
            "accuracy": float(r["robust_accuracy"]),
        }
    )
    if int(r["restarts"]) > 1 and r.get("restart_accuracies"):
      out.append(
          {
              "eps": r.get("eps"),
              "steps": int(r["steps"]),
              "restarts": 1,
              "accuracy": float(r["restart_accuracies"][0]),
          }
      )
  return out


def _budget_flags(entries: Sequence[Mapping[str, Any]], margin: float) -> list[dict]:
  flags = []
  entries = [
      {"steps": int(e["steps"]), "restarts": int(e.get("restarts", 1)), "accuracy": _accuracy(e)}
      for e in entries
  ]
  if not entries:
    return flags
  most_restarts = max(e["restarts"] for e in entries)
  by_steps = sorted(
      (e for e in entries if e["restarts"] == most_restarts), key=lambda e: e["steps"]
  )
  if len(by_steps) >= 2 and by_steps[-2]["accuracy"] - by_steps[-1]["accuracy"] > margin:
    small, large = by_steps[-2], by_steps[-1]
    drop = small["accuracy"] - large["accuracy"]
    flags.append(
        {
            "name": "pgd_more_steps_help",
            "message": (
                f"PGD-{large['steps']} is {drop:.2f} "
                f"points below PGD-{small['steps']} ({large['accuracy']:.2f}% vs "
                f"{small['accuracy']:.2f}%): the attack has not converged"
            ),
            "values": {
                "steps": [small["steps"], large["steps"]],
                "accuracy": [small["accuracy"], large["accuracy"]],
                "restarts": most_restarts,
                "margin": margin,
            },
        }
    )
  most_steps = max(e["steps"] for e in entries)
  by_restarts = sorted(
      (e for e in entries if e["steps"] == most_steps), key=lambda e: e["restarts"]
  )
  if len(by_restarts) >= 2 and by_restarts[-2]["accuracy"] - by_restarts[-1]["accuracy"] > margin:
    small, large = by_restarts[-2], by_restarts[-1]
    flags.append(
        {
            "name": "pgd_more_restarts_help",
            "message": (
                f"{large['restarts']} restarts of PGD-{most_steps} are "
                f"{small['accuracy'] - large['accuracy']:.2f} points below "
                f"{small['restarts']} ({large['accuracy']:.2f}% vs "
                f"{small['accuracy']:.2f}%): more restarts still help"
            ),
            "values": {
                "restarts": [small["restarts"], large["restarts"]],
                "accuracy": [small["accuracy"], large["accuracy"]],
                "steps": most_steps,
                "margin": margin,
            },
        }
    )
  return flags


def masking_check(
    *,
    white_box_accuracy: float | None = None,
    square_accuracy: float | None = None,
    autoattack: Mapping | None = None,
    pgd_budget: Sequence[Mapping[str, Any]] | None = None,
    pgd_accuracy: float | None = None,
    apgd_accuracy: float | None = None,
    large_eps_accuracy=None,
    margin: float = DEFAULT_MARGIN,
    square_margin: float | None = None,
    budget_margin: float | None = None,
    gap_margin: float | None = None,
    zero_tolerance: float = 0.0,
) -> dict:
  """{"suspicious": bool, "flags": [{"name", "message", "values"}], "checked": [names],
  "thresholds": {...}} from robust accuracies in percent.

  white_box_accuracy / square_accuracy: the best white-box attack's and Square's accuracy on
  the same points. autoattack: a `run_autoattack` result with Square as a stage: the accuracy
  before Square (after the white-box stages) and after it are compared the same way.
  pgd_budget: [{"steps", "restarts", "accuracy"}] (see `pgd_budget_from_result`).
  large_eps_accuracy: {eps: accuracy}, [(eps, accuracy)] or an `eps_sweep` result."""
  square_margin = margin if square_margin is None else square_margin
  budget_margin = margin if budget_margin is None else budget_margin
  gap_margin = margin if gap_margin is None else gap_margin
  flags, checked = [], []

  comparisons = []
  if white_box_accuracy is not None and square_accuracy is not None:
    comparisons.append(("separate runs", float(white_box_accuracy), float(square_accuracy)))
  if autoattack is not None and "square" in autoattack.get("attacks", ()):
    names = list(autoattack["attacks"])
    after = autoattack["robust_accuracy_after"]
    position = names.index("square")
    before = after[names[position - 1]] if position > 0 else autoattack["clean_accuracy"]
    comparisons.append(("AutoAttack stages", float(before), float(after["square"])))
  if comparisons:
    checked.append("square_beats_white_box")
  for source, white, black in comparisons:
    if white - black > square_margin:
      flags.append(
          {
              "name": "square_beats_white_box",
              "message": (
                  f"black-box Square leaves {black:.2f}% robust where the "
                  f"white-box attacks leave {white:.2f}% ({source}): the "
                  f"gradients are likely masked"
              ),
              "values": {
                  "white_box_accuracy": white,
                  "square_accuracy": black,
                  "source": source,
                  "margin": square_margin,
              },
          }
      )

  if pgd_budget:
    checked.append("pgd_budget")
    flags.extend(_budget_flags(pgd_budget, budget_margin))

  if large_eps_accuracy is not None:
    pairs = _pairs(large_eps_accuracy)
    if pairs:
      checked.append("no_zero_at_large_eps")
      eps, accuracy = max(pairs)
      if accuracy > zero_tolerance:
        flags.append(
            {
                "name": "no_zero_at_large_eps",
                "message": (
                    f"accuracy is still {accuracy:.2f}% at eps {eps:g}: a sound "
                    f"attack drives it to 0 as eps grows"
                ),
                "values": {"eps": eps, "accuracy": accuracy, "zero_tolerance": zero_tolerance},
            }
        )

  if pgd_accuracy is not None and apgd_accuracy is not None:
    checked.append("pgd_apgd_disagree")
    gap = float(pgd_accuracy) - float(apgd_accuracy)
    if abs(gap) > gap_margin:
      weaker = "PGD" if gap > 0 else "APGD"
      flags.append(
          {
              "name": "pgd_apgd_disagree",
              "message": (
                  f"PGD {float(pgd_accuracy):.2f}% vs APGD "
                  f"{float(apgd_accuracy):.2f}%: they differ by {abs(gap):.2f} "
                  f"points ({weaker} is weaker)"
              ),
              "values": {
                  "pgd_accuracy": float(pgd_accuracy),
                  "apgd_accuracy": float(apgd_accuracy),
                  "margin": gap_margin,
              },
          }
      )

  return {
      "suspicious": bool(flags),
      "flags": flags,
      "checked": checked,
      "thresholds": {
          "square_margin": square_margin,
          "budget_margin": budget_margin,
          "gap_margin": gap_margin,
          "zero_tolerance": zero_tolerance,
      },
  }


def masking_check_with_pgd(
    result: Mapping[str, Any], pgd_section: Mapping[str, Any] | None
) -> dict:
  """AutoAttack's own check (Square vs the white-box stages) plus, with a PGD section at the
  same eps, PGD's budget, the eps sweep at large eps and the PGD-vs-APGD gap."""
  after = result["robust_accuracy_after"]
  kwargs = {"autoattack": result} if "square" in result["attacks"] else {}
  if pgd_section:
    same_eps = [r for r in pgd_section.get("results", []) if abs(r["eps"] - result["eps"]) < 1e-9]
    if same_eps:
      kwargs["pgd_budget"] = pgd_budget_from_result({"results": same_eps})
      if "apgd-ce" in after:
        kwargs["pgd_accuracy"] = min(r["robust_accuracy"] for r in same_eps)
        kwargs["apgd_accuracy"] = after["apgd-ce"]
    if pgd_section.get("eps_sweep"):
      kwargs["large_eps_accuracy"] = pgd_section["eps_sweep"]
  return masking_check(**kwargs)
