"""The verdicts under the demo's transfer table follow the pretrainings' own metrics files."""

import json

from detection.demo.summary import pretraining_summary


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def demo_out(tmp_path, knn_last, sim_qq, sup_top1):
    # the records as pretrain.engine.progress and pretrain.eval.supervised write them
    write_jsonl(
        tmp_path / "moco" / "metrics.jsonl",
        [
            {"step": 0, "epoch": 0, "knn_top1": 22.0, "knn_top1_precise_bn": 14.2, "kind": "eval"},
            {"step": 50, "epoch": 1, "loss": 6.1, "sim_qq": sim_qq, "kind": "train"},
            {"step": 90, "epoch": 2, "knn_top1": knn_last, "kind": "eval"},
        ],
    )
    write_jsonl(
        tmp_path / "supervised" / "metrics.jsonl",
        [{"epoch": 1, "top1": 10.0}, {"epoch": 40, "top1": sup_top1}],
    )
    return pretraining_summary(tmp_path, "full")


def test_moco_below_the_random_init_bar_is_called_not_learned(tmp_path):
    text = demo_out(tmp_path, knn_last=26.9, sim_qq=0.64, sup_top1=92.5)
    assert "kNN top-1 26.9 % after 2 epochs; random init 22.0 % / 14.2 %" in text
    assert ">= 27.0 %): NO." in text  # 5 points above the higher baseline
    assert "not evidence that MoCo features transfer" in text
    assert "q.q' 0.640 between different images (not collapsed)" in text
    assert "val top-1 92.5 % on the labeled digits after 40 epochs (chance 10 %): learned" in text
    assert "upper bound here" in text


def test_moco_above_the_bar_and_a_collapsed_encoder_are_reported(tmp_path):
    text = demo_out(tmp_path, knn_last=27.0, sim_qq=0.998, sup_top1=11.0)
    assert ">= 27.0 %): yes" in text and "not evidence" not in text
    assert "(collapsed: one vector for every image)" in text
    assert "did NOT learn (near chance)" in text


def test_missing_stages_say_so(tmp_path):
    text = pretraining_summary(tmp_path, "quick")
    assert "budget 'quick'" in text
    assert "supervised: no metrics found" in text
    assert "MoCo: no kNN curve" in text


def write_table(tmp_path, rows):
    """transfer_table.csv as tools/transfer_table.py writes it (the columns read here)."""
    path = tmp_path / "table" / "transfer_table.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["task,init,metric,n,mean,std,delta,baseline"]
    lines += [f"digits,{init},{m},{n},{mean},{std},,supervised" for init, m, n, mean, std in rows]
    path.write_text("\n".join(lines) + "\n")


def test_transfer_verdict_is_moco_minus_random_against_the_larger_spread(tmp_path):
    rows = [("moco", "bbox/AP50", 3, 30.0, 1.0), ("random", "bbox/AP50", 3, 27.5, 2.0)]
    write_table(
        tmp_path, rows + [("supervised", "bbox/AP50", 3, 35.0, 0.5), ("moco", "bbox/AP", 3, 9, 1)]
    )
    text = pretraining_summary(tmp_path, "full")
    assert "AP50 moco 30.0 ± 1.0 vs random 27.5 ± 2.0 (3 trials each)" in text
    assert "(+2.50 vs 2.00): yes." in text
    assert "moco below the supervised upper bound (30.0 vs 35.0 AP50)" in text
    write_table(
        tmp_path, [("moco", "bbox/AP50", 3, 30.0, 3.0), ("random", "bbox/AP50", 3, 27.5, 2.0)]
    )
    assert "(+2.50 vs 3.00): NO." in pretraining_summary(tmp_path, "full")


def test_one_trial_gives_no_transfer_verdict(tmp_path):
    write_table(
        tmp_path, [("moco", "bbox/AP50", 1, 30.0, ""), ("random", "bbox/AP50", 1, 20.0, "")]
    )
    text = pretraining_summary(tmp_path, "quick")
    assert "from 1 trial: no spread measured, so no verdict" in text
    assert "yes." not in text.split("transfer:")[1]
