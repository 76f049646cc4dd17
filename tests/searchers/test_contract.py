"""The contract every registered searcher keeps, whatever its algorithm.

Each check drives the searcher with the in-memory engine of ``conftest.py`` on a
mixed, conditional space, with several workers, so asynchrony, promotions and
pauses are exercised the way an engine exercises them.
"""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil

import pytest

import warmtune.searchers
from warmtune.searchers import registered_searchers, searcher_from_state

# A searcher registers when its module is imported: import them all, so the suite
# covers every searcher whichever test files run before it (the Ray adapter is
# an engine, not a searcher).
for _module in pkgutil.iter_modules(warmtune.searchers.__path__):
    if _module.name != "ray_adapter":
        importlib.import_module(f"warmtune.searchers.{_module.name}")

# Every registered searcher with its defaults, plus the variants that take another path:
# warm BOHB (a WarmStart over past tasks, and a History of the task itself) is a
# searcher of its own as far as the contract goes.
VARIANTS = [(name, {}) for name in registered_searchers()] + [
    ("bohb", {"mode": "sync"}),
    ("hyperband", {"max_concurrent_brackets": 1}),
    ("bohb", {"warm": "past"}),
    ("bohb", {"warm": "past", "mode": "sync"}),
    ("bohb", {"warm": "history"}),
    ("pbt", {"warm": "past"}),
]


def _id(variant: tuple[str, dict]) -> str:
    name, options = variant
    return name + "".join(f"-{k}={v}" for k, v in options.items())


@pytest.fixture(params=VARIANTS, ids=[_id(v) for v in VARIANTS])
def variant(request):
    return request.param


@pytest.fixture
def extras(variant, mixed_space, warm_extras_fn):
    """What a warm variant takes besides its options (again on restore), built fresh
    each time: a warm start holds weights, and two searchers never share one."""
    _, options = variant
    kind = options.get("warm")
    return lambda: warm_extras_fn(mixed_space, kind) if kind else {}


@pytest.fixture
def make(variant, mixed_space, build_searcher, extras):
    name, options = variant
    options = {k: v for k, v in options.items() if k != "warm"}
    return lambda seed: build_searcher(name, mixed_space, seed, **options, **extras())


def test_same_seed_gives_the_same_suggestions(make, driver_cls):
    first = driver_cls(make(7), workers=3).run(40)
    second = driver_cls(make(7), workers=3).run(40)
    assert first == second


def test_state_round_trip_continues_identically(make, mixed_space, driver_cls, extras):
    original = driver_cls(make(3), workers=3, stop_probability=0.1)
    original.run(30)
    state = json.loads(json.dumps(original.searcher.state(), allow_nan=False))
    resumed = copy.deepcopy(original)
    resumed.searcher = searcher_from_state(state, mixed_space, **extras())
    assert type(resumed.searcher) is type(original.searcher)
    assert resumed.run(20) == original.run(20)


def test_every_suggestion_is_valid_in_a_conditional_mixed_space(make, mixed_space, driver_cls):
    driver = driver_cls(make(11), workers=4)
    for suggestion in driver.run(120):
        # validate() raises on a missing, inactive, unknown or out-of-range parameter.
        assert mixed_space.validate(suggestion.config) == suggestion.config


@pytest.mark.parametrize("workers", [1, 4])
def test_failures_do_not_break_it_and_are_never_resumed(
    make, mixed_space, driver_cls, objectives, workers
):
    driver = driver_cls(make(5), objective=objectives["failing"], workers=workers)
    for suggestion in driver.run(120):
        mixed_space.validate(suggestion.config)
    assert driver.failed, "the objective should have produced failures"
    assert not driver.violations


def test_never_hands_out_a_running_trial(make, driver_cls):
    driver = driver_cls(make(2), workers=6, stop_probability=0.2)
    driver.run(150)
    assert not driver.violations


def test_declared_abilities_match_what_it_does(make, variant):
    """What an engine asks of a searcher is declared on it, never probed: a warm start
    where it supports one, a promotion (or none) from any searcher, and only searchers
    that schedule trials hand out promotions."""
    _, options = variant
    searcher = make(0)
    if options.get("warm") == "past":
        assert searcher.supports_warm_start and searcher.warm_start is not None
    elif not searcher.supports_warm_start:
        assert searcher.warm_start is None
    assert searcher.promotion() is None  # nothing paused yet
    if not searcher.schedules_trials:
        assert type(searcher).promotion is warmtune.searchers.base.Searcher.promotion
    assert searcher.copies_checkpoints == (searcher.name == "pbt")


def test_options_are_every_constructor_keyword_but_the_objects(make):
    """options() is derived from the constructor: every keyword but space, seed and the
    objects passed again on restore, each with the value the searcher runs with."""
    import inspect

    searcher = make(0)
    keywords = set(inspect.signature(type(searcher).__init__).parameters) - {"self"}
    expected = keywords - {"space", "seed", *type(searcher).passed_again}
    assert set(searcher.options()) == expected
    assert set(searcher.passed_again) <= keywords
    rebuilt = type(searcher)(space=searcher.space, seed=0, **searcher.options())
    assert rebuilt.options() == searcher.options()


def test_an_option_a_subclass_adds_is_saved_and_restored_without_more_code(mixed_space):
    from warmtune.searchers import RandomSearch

    class Tempered(RandomSearch):
        name = ""  # not registered

        def __init__(self, *, space, seed=None, temperature: float = 1.0) -> None:
            super().__init__(space=space, seed=seed)
            self.temperature = temperature

    searcher = Tempered(space=mixed_space, seed=1, temperature=0.5)
    state = json.loads(json.dumps(searcher.state()))
    assert state["options"] == {"temperature": 0.5}
    assert Tempered.from_state(state, mixed_space).temperature == 0.5


def test_an_option_the_searcher_does_not_keep_is_an_error_that_names_it(mixed_space):
    from warmtune.searchers import RandomSearch

    class Forgetful(RandomSearch):
        name = ""

        def __init__(self, *, space, seed=None, temperature: float = 1.0) -> None:
            super().__init__(space=space, seed=seed)
            self._t = temperature

    with pytest.raises(TypeError, match=r"'temperature'.*self\.temperature"):
        Forgetful(space=mixed_space, seed=1).options()


def test_restore_refuses_an_object_the_searcher_does_not_take_again(mixed_space):
    from warmtune.searchers import RandomSearch

    state = RandomSearch(space=mixed_space, seed=1).state()
    with pytest.raises(ValueError, match="takes no \\['warm_start'\\]"):
        RandomSearch.from_state(state, mixed_space, warm_start=None)


BAD_OPTIONS = [
    ("bohb", {"top_n_percent": 150}, "top_n_percent"),
    ("bohb", {"design_cost": "cheap"}, "design_cost"),
    ("bohb", {"eta": 1}, "eta"),
    ("bohb", {"mode": "batch"}, "mode"),
    ("hyperband", {"max_concurrent_brackets": 0}, "max_concurrent_brackets"),
    ("asha", {"min_budget": 0}, "min_budget"),
    ("pbt", {"quantile_fraction": 0.7}, "quantile_fraction"),
    ("pbt", {"population_size": 1}, "population_size"),
    ("optuna", {"n_startup_trials": -1}, "n_startup_trials"),
    ("optuna", {"multivariate": False, "group": True}, "group=True"),
    ("hyperopt", {"n_startup_jobs": 0}, "n_startup_jobs"),
    ("random", {"temperature": 2}, "no option"),
]


@pytest.mark.parametrize(("name", "options", "message"), BAD_OPTIONS)
def test_checking_options_raises_what_building_raises_without_building(
    name, options, message, mixed_space, monkeypatch
):
    from warmtune.searchers import check_searcher, make_searcher, searcher_class

    with pytest.raises(ValueError, match=message) as built:
        make_searcher(name, space=mixed_space, seed=0, options=options, max_budget=9)
    _forbid_building(searcher_class(name), monkeypatch)
    with pytest.raises(ValueError, match=message) as checked:
        check_searcher(name, space=mixed_space, seed=0, options=options, max_budget=9)
    assert str(checked.value) == str(built.value)


def test_checking_good_options_builds_nothing_and_passes(variant, mixed_space, monkeypatch):
    from warmtune.searchers import check_searcher, searcher_class

    name, options = variant
    options = {k: v for k, v in options.items() if k != "warm"}
    _forbid_building(searcher_class(name), monkeypatch)
    assert check_searcher(name, space=mixed_space, seed=0, options=options, max_budget=9).name


def _forbid_building(cls, monkeypatch):
    """Make building ``cls`` fail the test (its signature stays readable)."""
    import functools

    @functools.wraps(cls.__init__)
    def no_build(*args, **kwargs):
        pytest.fail(f"built a {cls.__name__}")

    monkeypatch.setattr(cls, "__init__", no_build)
