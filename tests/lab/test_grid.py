import json

import numpy as np
import pytest

from tricklab import config as config_
from tricklab.lab import grid
from tricklab.lab.ablate import make_trials


def test_split_values_respects_brackets_and_quotes():
    assert grid.split_values("1e-3, 1e-2") == ["1e-3", "1e-2"]
    assert grid.split_values("[64, 64],[128]") == ["[64, 64]", "[128]"]
    assert grid.split_values('"a,b",c') == ['"a,b"', "c"]
    with pytest.raises(config_.ConfigError, match="unbalanced"):
        grid.split_values("[1, 2")


def test_parse_grid_reads_toml_literals():
    assert grid.parse_grid("optimizer.lr=1e-3,0.01") == ("optimizer.lr", [0.001, 0.01])
    assert grid.parse_grid("model.batchnorm=true,false") == ("model.batchnorm", [True, False])
    assert grid.parse_grid("model.hidden=[64,64],[128]") == ("model.hidden", [[64, 64], [128]])
    assert grid.parse_grid("optimizer.name=sgd,adam") == ("optimizer.name", ["sgd", "adam"])


def test_unknown_key_names_the_closest():
    with pytest.raises(config_.ConfigError, match="did you mean 'optimizer.lr'"):
        grid.parse_grid("optimizer.lrr=0.1")


def draw(space, n, sampler="random", seed=0):
    """n points of ``space`` as a sweep asks them: the sampler made again for each slot."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    points = []
    for slot in range(n):
        study.sampler = grid.make_sampler(sampler, space, seed, slot)
        trial = study.ask(space.distributions())
        points.append(space.decode(trial.params))
        study.tell(trial, 0.0)
    return points


def test_the_grid_sampler_tries_every_combination_once():
    space = grid.make_space(["optimizer.lr=0.1,0.01,0.001", "model.hidden=[8],[16, 16]"])
    assert space.size() == 6
    assert space.choices() == {"optimizer.lr": [0.1, 0.01, 0.001], "model.hidden": ["[8]", "[16, 16]"]}
    points = draw(space, 6, "grid")
    assert sorted(json.dumps(p, sort_keys=True) for p in points) == sorted(
        json.dumps({"optimizer.lr": a, "model.hidden": b}, sort_keys=True)
        for a in (0.1, 0.01, 0.001) for b in ([8], [16, 16]))
    assert draw(space, 6, "grid") == points  # the same seed, the same order
    assert list(points[0]) == ["optimizer.lr", "model.hidden"]  # in the order the keys were given


def test_empty_space_is_the_base_configuration():
    space = grid.make_space()
    assert space.size() == 1 and space.distributions() == {} and draw(space, 1, "grid") == [{}]


def test_a_repeated_grid_value_is_refused():
    with pytest.raises(config_.ConfigError, match=r"^--grid optimizer.lr repeats a value: 0.1,0.1$"):
        grid.make_space(["optimizer.lr=0.1,0.1"])


def test_random_draws_grid_values_and_ranges():
    space = grid.make_space(["optimizer.name=sgd,adam"], ["optimizer.lr=1e-4:1e-1:log", "model.dropout=0:0.5",
                                                         "train.batch_size=16:256"])
    points = draw(space, 200, seed=3)
    assert {p["optimizer.name"] for p in points} == {"sgd", "adam"}
    lrs = np.array([p["optimizer.lr"] for p in points])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
    # log-uniform: about a third of the draws in each decade
    assert 0.2 < np.mean(lrs < 1e-3) < 0.47
    assert all(0 <= p["model.dropout"] <= 0.5 for p in points)
    assert all(isinstance(p["train.batch_size"], int) and 16 <= p["train.batch_size"] <= 256 for p in points)
    assert draw(space, 200, seed=3) == points  # the same command draws the same points
    assert draw(space, 5, seed=4) != points[:5]
    assert draw(space, 200, seed=3)[7] == points[7]  # slot 7 draws what it draws, whatever came before


def test_range_errors():
    from tricklab.lab.sweep import check_search

    with pytest.raises(config_.ConfigError, match=r"^--range optimizer.lr needs a sampler that draws: --random N"):
        check_search(grid.make_space([], ["optimizer.lr=1e-4:1e-1"]), "grid", None, "none")
    with pytest.raises(config_.ConfigError, match=r"^--sampler random needs --trials N"):
        check_search(grid.make_space([], ["optimizer.lr=1e-4:1e-1"]), "random", None, "none")
    assert check_search(grid.make_space([], ["optimizer.lr=1e-4:1e-1"]), None, 7, "none") == ("tpe", 7)
    assert check_search(grid.make_space(["optimizer.lr=0.1,0.2"]), None, None, "none") == ("grid", 2)
    with pytest.raises(config_.ConfigError, match=r"^--trials 3: the grid has 2 combinations$"):
        check_search(grid.make_space(["optimizer.lr=0.1,0.2"]), "grid", 3, "none")
    with pytest.raises(config_.ConfigError, match="only numeric"):
        grid.parse_range("optimizer.name=1:2")
    with pytest.raises(config_.ConfigError, match="low < high"):
        grid.parse_range("optimizer.lr=0.1:0.01")
    with pytest.raises(config_.ConfigError, match="low > 0"):
        grid.parse_range("optimizer.lr=0:0.1:log")
    with pytest.raises(config_.ConfigError, match="both"):
        grid.make_space(["optimizer.lr=0.1"], ["optimizer.lr=0.01:0.1"])


def test_trials_have_stable_distinct_ids_and_validated_configs():
    cfg = config_.resolve({"data": {"name": "mnist1d"}, "run": {"seed": 7}})
    points = [{"optimizer.lr": 0.1}, {"optimizer.lr": 0.01}]
    a = make_trials(cfg, points, [7, 8])
    b = make_trials(cfg, points, [7, 8])
    assert [t.id for t in a] == [t.id for t in b]
    assert len({t.id for t in a}) == 4
    assert [(t.point, t.seed) for t in a] == [(0, 7), (0, 8), (1, 7), (1, 8)]
    assert a[3].config["optimizer"]["lr"] == 0.01 and a[3].config["run"]["seed"] == 8
    with pytest.raises(config_.ConfigError, match="model.dropout"):
        make_trials(cfg, [{"model.dropout": 1.5}], [0])
    with pytest.raises(config_.ConfigError, match="same configuration"):
        make_trials(cfg, [{"optimizer.lr": 0.1}, {"optimizer.lr": 0.1}], [0])


def test_ranges_become_optuna_distributions():
    import optuna

    assert grid.parse_range("optimizer.lr=1e-5:1:log").distribution() == \
        optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)
    assert grid.parse_range("train.batch_size=15.5:64").distribution() == optuna.distributions.IntDistribution(16, 64)
    with pytest.raises(config_.ConfigError, match=r"^--range train.batch_size: no integer between 16.2 and 16.7$"):
        grid.parse_range("train.batch_size=16.2:16.7").distribution()


def test_the_seed_is_refused_as_a_search_key_in_favour_of_seeds():
    # each trial's seed is run.seed + k (k < --seeds): a searched seed would be overwritten
    with pytest.raises(config_.ConfigError, match=r"--grid run\.seed.*use --seeds K"):
        grid.make_space(["run.seed=1,2,3,4"])
    with pytest.raises(config_.ConfigError, match=r"--range run\.seed.*use --seeds K"):
        grid.make_space([], ["run.seed=0:10"])


def test_a_layer_argument_is_a_search_key(layers_config):
    assert grid.parse_grid("model.layers.3.p=0.2,0.5") == ("model.layers.3.p", [0.2, 0.5])
    cfg = config_.load(layers_config)
    space = grid.bind(grid.make_space(["model.layers.3.p=0.2,0.5"], ["model.layers.0.out_features=8:512"]), cfg)
    points = draw(space, 6)
    # out_features is an int in Linear's signature, so the range draws integers
    assert all(isinstance(p["model.layers.0.out_features"], int) and 8 <= p["model.layers.0.out_features"] <= 512
               for p in points)
    trials = make_trials(cfg, points, [0])
    for point, trial in zip(points, trials):
        layers = trial.config["model"]["layers"]
        assert layers[3] == {"type": "Dropout", "p": point["model.layers.3.p"]}
        assert layers[0] == {"type": "Linear", "out_features": point["model.layers.0.out_features"]}
        assert [spec["type"] for spec in layers] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]


def test_a_layer_argument_of_a_shorthand_model_searches_its_expansion():
    cfg = config_.resolve({"data": {"name": "mnist1d"}, "model": {"hidden": [32], "dropout": 0.3}})
    grid.bind(grid.make_space(["model.layers.2.p=0.1"]), cfg)
    (trial,) = make_trials(cfg, [{"model.layers.2.p": 0.1}], [0])
    assert trial.config["model"]["layers"] == [{"type": "Linear", "out_features": 32}, {"type": "ReLU"},
                                               {"type": "Dropout", "p": 0.1}, {"type": "Linear"}]
    assert not config_.uses_shorthand(trial.config)


def test_a_layer_or_argument_that_is_not_there_is_a_one_line_error(layers_config):
    cfg = config_.load(layers_config)
    with pytest.raises(config_.ConfigError, match=r"^--grid model\.layers\.7\.p: model\.layers has 5 layers "
                                                  r"\(0 Linear, 1 BatchNorm1d, 2 ReLU, 3 Dropout, 4 Linear\); "
                                                  r"there is no layer 7$"):
        grid.bind(grid.make_space(["model.layers.7.p=0.2"]), cfg)
    with pytest.raises(config_.ConfigError, match=r"^--grid model\.layers\.3\.pp: model\.layers\.3 is Dropout, which "
                                                  r"has no argument 'pp'; did you mean 'p'\? \(its arguments: p, "):
        grid.bind(grid.make_space(["model.layers.3.pp=0.2"]), cfg)
    with pytest.raises(config_.ConfigError, match=r"^--range model\.layers\.2\.p: model\.layers\.2 is ReLU, which has "
                                                  r"no argument 'p' \(it takes no arguments\)$"):
        grid.bind(grid.make_space([], ["model.layers.2.p=0:0.5"], ), cfg)
    with pytest.raises(config_.ConfigError, match=r"^--range model\.layers\.0\.bias: only numeric arguments"):
        grid.bind(grid.make_space([], ["model.layers.0.bias=0:1"], ), cfg)
    with pytest.raises(config_.ConfigError, match=r"^search key 'model\.layers\.x\.p' must be "
                                                  r"model\.layers\.N\.argument"):
        grid.make_space(["model.layers.x.p=0.2"])
    with pytest.raises(config_.ConfigError, match=r"model\.layers\.2\.p and model\.dropout are both searched"):
        grid.make_space(["model.layers.2.p=0.2", "model.dropout=0.1,0.2"])


def test_a_bad_layer_key_stops_the_sweep_before_any_folder_exists(layers_config, tmp_path, capsys):
    from tricklab.cli import main

    out = tmp_path / "sweep"
    for spec in ("model.layers.9.p=0.2", "model.layers.3.q=0.2"):
        assert main(["sweep", str(layers_config), "--grid", spec, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tricklab: error: --grid {spec.split('=')[0]}: ") and err.count("\n") == 1
    assert not out.exists()


def test_a_point_is_validated_as_a_whole():
    # set one at a time, momentum would first meet Adam (which has none) and be refused
    cfg = config_.resolve({"data": {"name": "mnist1d"}})
    (trial,) = make_trials(cfg, [{"optimizer.momentum": 0.9, "optimizer.name": "sgd"}], [3])
    assert trial.config["optimizer"]["name"] == "sgd" and trial.config["optimizer"]["momentum"] == 0.9
    assert trial.config["run"]["seed"] == 3
    with pytest.raises(config_.ConfigError, match="optimizer.momentum"):  # the final combination is still checked
        make_trials(cfg, [{"optimizer.momentum": 0.9}], [0])


def test_a_layer_value_its_class_refuses_stops_the_sweep_before_any_trial(tmp_path, capsys):
    from tricklab.cli import main

    cfg = tmp_path / "layers.toml"
    cfg.write_text('[train]\nepochs = 1\n[[model.layers]]\ntype = "Linear"\nout_features = 8\n'
                   '[[model.layers]]\ntype = "ReLU"\n[[model.layers]]\ntype = "Dropout"\np = 0.2\n'
                   '[[model.layers]]\ntype = "Linear"\n')
    out = tmp_path / "sweep"
    rc = main(["sweep", str(cfg), "--grid", "model.layers.2.p=0.3,1.5", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("tricklab: error: configuration ")
    assert "model.layers.2 (Dropout)" in err[-1] and "1.5" in err[-1]
    assert not out.exists()
