"""``jaxinv eval RUN --compare MODEL``: other trained models (pretrained names or run
directories) restore the SAME degraded images, as extra columns of the table and the figure."""

import json

import numpy as np
import pytest
from test_cli import EVAL, TINY

from jaxinv import cli, pretrained
from jaxinv.evaluate import EvaluationError, evaluate_run


def _train(out, *extra):
    assert cli.main(["train", *TINY, *extra, "--no-figures", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    main = _train(base / "main")
    other = _train(base / "other", "--seed", "3", "--steps", "3")
    noisier = _train(base / "noisier", "--sigma", "0.2")
    root = base / "pretrained"
    pretrained.export(other, "tiny-other", "# tiny\n", root=root)
    return main, other, noisier, root


def test_compared_models_restore_the_same_degraded_images(runs, monkeypatch, capsys):
    main, other, _, root = runs
    monkeypatch.setenv(pretrained.ROOT_ENV, str(root))
    alone = evaluate_run(main, crop=16, max_images=2, tv=False)
    both = evaluate_run(main, crop=16, max_images=2, tv=False, compare=["tiny-other", other])
    assert both["compare"] == ["tiny-other", "other"]
    for a, b in zip(alone["images"], both["images"], strict=True):
        assert a["degraded"] == b["degraded"] and a["reconstruction"] == b["reconstruction"]
        # the exported model and its run directory are the same model: the same restoration
        assert b["tiny-other"] == b["other"]
        assert b["other"]["psnr"] != b["reconstruction"]["psnr"]  # another model
    mean = np.mean([r["other"]["psnr"] for r in both["images"]])
    assert both["mean"]["other"]["psnr"] == pytest.approx(mean)

    capsys.readouterr()
    argv = ["eval", str(main), *EVAL, "--no-tv", "--compare", "tiny-other", "--json"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["compare"] == ["tiny-other"] and "tiny-other" in printed["mean"]
    assert cli.main(["eval", str(main), *EVAL, "--no-tv", "--compare", "tiny-other"]) == 0
    assert "tiny-other PSNR" in capsys.readouterr().out


def test_a_model_for_another_problem_or_an_unknown_name_is_refused(runs, capsys):
    main, _, noisier, _ = runs
    with pytest.raises(EvaluationError, match="trained for denoise.*σ=0.2"):
        evaluate_run(main, crop=16, max_images=2, tv=False, compare=[noisier])
    code = cli.main(["eval", str(main), *EVAL, "--no-tv", "--compare", "no-such-model"])
    err = capsys.readouterr().err
    assert code == 2 and "not a run directory nor a pretrained model" in err
