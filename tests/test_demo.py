"""`dsbs demo` end to end at a reduced size: table, plot and JSON are produced and sane."""
import json
import math

from dsbs_jax.experiments import demo


def test_demo_quick_end_to_end(tmp_path, capsys):
    assert demo.main(["--quick", "--out", str(tmp_path), "--train_steps", "30", "--fractions", "50,100"]) == 0
    printed = capsys.readouterr().out
    assert "Standard finetuning (gold)" in printed and "Distilling step-by-step (teacher labels)" in printed

    results = json.loads((tmp_path / "results.json").read_text())
    cells = {(r["method"], r["fraction"]) for r in results["runs"]}
    assert cells == {(m, f) for m in ("standard", "dsbs_llm") for f in (50.0, 100.0)}
    for run in results["runs"]:
        assert 0.0 <= run["accuracy"] <= 100.0 and math.isfinite(run["final_loss"]) and run["steps"] == 30
        assert run["eval_task"] == ("demo_math_standard_gold" if run["method"] == "standard" else "demo_math_label_gold")
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n") == 4 and "50 % data" in table and "100 % data" in table

    png = (tmp_path / "accuracy_vs_data.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # The rationale job really ran: its manifest counts the annotations teacher's outputs.
    manifest = json.loads((tmp_path / "data" / "demo_math" / "manifest.json").read_text())
    assert manifest["teacher"]["backend"] == "annotations"
    assert manifest["splits"]["train"]["num_with_rationale"] == demo.QUICK_SIZES["train"]
    assert manifest["splits"]["train"]["parse_rate"] == 1.0
