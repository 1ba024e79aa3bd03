"""Training past one process: this file runs itself under torchrun, 2 CPU processes on gloo."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from bnprobe.data import Augment, Dataset, Split
from bnprobe.train import checkpoint_path, load_train_state


def _worker(out: Path) -> None:
    """One torchrun process: a two-variant study, recording this rank's final weights and history."""
    import bnprobe.study._run as study
    from bnprobe.study import StudyConfig, run_study
    from bnprobe.train import TrainConfig

    rank = int(os.environ["RANK"])
    train_model = study.train_model

    def recording(model, *args, **kwargs):
        result = train_model(model, *args, **kwargs)
        torch.save(model.state_dict(), out / f"{kwargs['checkpoint'].stem}-rank{rank}.pt")
        (out / f"{kwargs['checkpoint'].stem}-rank{rank}.json").write_text(json.dumps(result.history))
        return result

    study.train_model = recording
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(96, 1, 8, 8, generator=g)
    data = Dataset("tiny", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4, augment=Augment(pad=1, flip=True))
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], samples=16, probes=["sparsity"], device="cpu",
                         checkpoints="resume", train=TrainConfig(epochs=2, batch_size=16))  # keep both ranks' rng
    results = run_study(config, out=out / "study", dataset=data)
    (out / f"rank{rank}-runs.json").write_text(json.dumps([r.variant for r in results.runs]))


def test_two_processes_train_identical_models_and_rank0_writes(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               __file__, str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((tmp_path / "rank0-runs.json").read_text()) == ["bn", "identity"]
    assert json.loads((tmp_path / "rank1-runs.json").read_text()) == []  # rank 1 trains, never probes or writes
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    assert [r["variant"] for r in saved["runs"]] == ["bn", "identity"] and saved["runs"][0]["probes"]["sparsity"]
    for variant in ("bn", "identity"):
        ranks = [torch.load(tmp_path / f"{variant}-seed0-rank{r}.pt") for r in (0, 1)]
        checkpoint = load_train_state(checkpoint_path(tmp_path / "study", variant, 0))
        assert checkpoint["epoch"] == 2 and len(checkpoint["rng"]) == 2
        for key, value in ranks[0].items():  # weights and BatchNorm statistics agree everywhere
            assert torch.equal(value, ranks[1][key]) and torch.equal(value, checkpoint["model"][key])
        histories = [json.loads((tmp_path / f"{variant}-seed0-rank{r}.json").read_text()) for r in (0, 1)]
        assert histories[0] != histories[1]  # each rank's metrics are over its own shard


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
