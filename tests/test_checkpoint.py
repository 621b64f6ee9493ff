"""deepcheck.checkpoint: round trips (states, config, rebuild), atomic writes that survive a failure midway,
and clear errors for missing, corrupt, truncated or foreign files."""

import os

import pytest
import torch

from deepcheck import checkpoint as ck
from deepcheck.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    rebuild_model,
    save_checkpoint,
)
from deepcheck.flows import LinearFlow, build


def _trained_linear(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = LinearFlow(3)
    with torch.no_grad():
        model.A.add_(0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64))
        model.b.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        (-model.log_prob(x).mean()).backward()
        opt.step()
    return model, opt


def test_round_trip_into_given_model_and_optimizer(tmp_path):
    model, opt = _trained_linear()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    opt.zero_grad()
    (-model.log_prob(torch.ones(2, 3, dtype=torch.float64)).mean()).backward()
    opt.step()
    sched.step()
    rng = torch.Generator().manual_seed(5).get_state()
    path = save_checkpoint(tmp_path / "sub" / "c.pt", model, opt, scheduler=sched, epoch=3, step=42,
                           history=[{"epoch": 1, "val_bpd": 1.5}], rng=rng, note="hello")
    assert path == tmp_path / "sub" / "c.pt" and path.is_file()
    other = LinearFlow(3)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.01)
    other_sched = torch.optim.lr_scheduler.StepLR(other_opt, step_size=2, gamma=0.5)
    got = load_checkpoint(path, other, other_opt, scheduler=other_sched)
    assert got.model is other
    assert torch.equal(other.A, model.A) and torch.equal(other.b, model.b)
    assert got.state["epoch"] == 3 and got.state["step"] == 42 and got.state["note"] == "hello"
    assert got.state["history"] == [{"epoch": 1, "val_bpd": 1.5}]
    assert torch.equal(got.state["rng"], rng)
    assert other_sched.state_dict() == sched.state_dict()
    # the restored optimizer takes exactly the step the original takes
    x = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)
    for m, o in ((model, opt), (other, other_opt)):
        o.zero_grad()
        (-m.log_prob(x).mean()).backward()
        o.step()
    assert torch.equal(other.A, model.A) and torch.equal(other.b, model.b)


def test_rebuild_from_saved_config(tmp_path):
    glow = build("glow", "tiny", (1, 8, 8), n_bins=17, seed=3)
    with torch.no_grad():
        glow(torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)))  # ActNorm init (train mode)
        for p in glow.parameters():
            p.add_(0.01)
    save_checkpoint(tmp_path / "g.pt", glow)
    got = load_checkpoint(tmp_path / "g.pt")
    assert type(got.model) is type(glow) and got.model_config == glow.config
    for (k, v), (k2, v2) in zip(glow.state_dict().items(), got.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    glow.eval()
    got.model.eval()
    assert torch.equal(glow.log_prob(x), got.model.log_prob(x))
    # the linear flow keeps its dtype through a rebuild
    lin = LinearFlow(2, dtype=torch.float32)
    save_checkpoint(tmp_path / "l.pt", lin)
    assert load_checkpoint(tmp_path / "l.pt").model.A.dtype == torch.float32
    assert isinstance(rebuild_model({"model": "linear", "shape": [4], "n_bins": None}), LinearFlow)
    with pytest.raises(ValueError, match="'model'"):
        rebuild_model({"shape": [4]})


def _fake_save_then_fail(payload, f):
    """Write part of a real serialisation, then fail as a full disk would."""
    import io

    buf = io.BytesIO()
    torch.serialization.save(payload, buf)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    raise OSError(28, "No space left on device")


def test_interrupted_save_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    model, opt = _trained_linear(1)
    path = tmp_path / "c.pt"
    save_checkpoint(path, model, opt, epoch=1)
    before = path.read_bytes()
    with torch.no_grad():
        model.A.mul_(2.0)
    monkeypatch.setattr(ck.torch, "save", _fake_save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, model, opt, epoch=2)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temporary file left behind
    assert path.read_bytes() == before
    got = load_checkpoint(path, LinearFlow(3))
    assert got.state["epoch"] == 1 and not torch.equal(got.model.A, model.A)
    # a KeyboardInterrupt midway is cleaned up the same way
    monkeypatch.setattr(ck.os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, opt, epoch=3)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["c.pt"] and path.read_bytes() == before


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint at .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt", LinearFlow(2))
    with pytest.raises(ValueError):  # also a ValueError, and a FileNotFoundError
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="directory"):
        load_checkpoint(tmp_path)


def test_corrupt_truncated_and_foreign_files(tmp_path):
    model, opt = _trained_linear(2)
    good = save_checkpoint(tmp_path / "good.pt", model, opt)
    raw = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 3])
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("trunc.pt", "junk.pt", "empty.pt"):
        with pytest.raises(CheckpointError, match=f"{name}.*corrupt or truncated"):
            load_checkpoint(tmp_path / name, LinearFlow(3))
    torch.save({"A": model.A.detach()}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a deepcheck checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt", LinearFlow(3))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(good, LinearFlow(4))
    with pytest.raises(CheckpointError, match="no optimizer state"):
        save_checkpoint(tmp_path / "noopt.pt", model)
        load_checkpoint(tmp_path / "noopt.pt", LinearFlow(3), torch.optim.Adam(LinearFlow(3).parameters()))
    plain = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "plain.pt", plain)
    with pytest.raises(CheckpointError, match="no model config"):
        load_checkpoint(tmp_path / "plain.pt")
    assert load_checkpoint(tmp_path / "plain.pt", rebuild=False).model is None


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="model"):
        save_checkpoint(tmp_path / "x.pt", {"A": 1})
    with pytest.raises(TypeError, match="optimizer"):
        save_checkpoint(tmp_path / "x.pt", LinearFlow(2), optimizer="adam")
    with pytest.raises(ValueError, match="directory"):
        save_checkpoint(tmp_path, LinearFlow(2))


def test_atomic_write_replaces_whole_file_and_cleans_up(tmp_path, monkeypatch):
    from deepcheck import fileio

    target = tmp_path / "sub" / "out.json"
    assert fileio.atomic_write(target, "héllo") == target
    assert target.read_bytes() == "héllo".encode()
    fileio.atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    monkeypatch.setattr(fileio.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        fileio.atomic_write(target, "new")
    assert target.read_bytes() == b"\x00\x01"  # old complete file kept
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temporary file left
    with pytest.raises(TypeError, match="data"):
        fileio.atomic_write(target, 3)  # type: ignore[arg-type]
