"""The search itself: an Optuna study whose storage lives in the run folder, one short distillation per trial.

A trial picks a student (``space.suggest``); its cost is measured before anything trains (``budget``), and one
over budget stops there. The others distil from the run's teacher through the teacher-output cache (built once:
its key does not depend on the student), reporting validation top-1 after every epoch to the pruner, which
stops poor trials early (successive halving / Hyperband). The objective is the best validation top-1 within the
budget: the budget is a hard limit, not a second objective, because Optuna's pruners work on single-objective
studies only; the Pareto front of accuracy against the budget metric is read from the finished trials (``front``).

Each set of values trains in its own folder ``trials/<key>``, named by the values: a trial the sampler proposes
again is answered from the folder, one killed mid-training continues from its last checkpoint when the search
is run again, so no epoch is trained twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from distill.config import instantiate_checked, to_dict
from distill.errors import ConfigError
from distill.io import read_json, write_json
from distill.search import budget as budget_module
from distill.search.space import Candidate, apply, candidate_of, default_candidate, suggest

log = logging.getLogger("distill")

STUDY_NAME = "distill-search"


class ReferenceTrial:
    """Stands in for an Optuna trial when the default student trains at the trials' schedule, outside the study:
    the reference point of the plot, never pruned."""

    number = -1

    def report(self, value: float, step: int) -> None:
        return None

    def should_prune(self) -> bool:
        return False


class TrialReporter(L.Callback):
    """Reports the monitored metric after each validation to the trial; stops training when the pruner says so."""

    def __init__(self, trial: Any, monitor: str, first_epoch: int = 0) -> None:
        self.trial, self.monitor, self.first_epoch = trial, monitor, first_epoch
        self.values: dict[int, float] = {}
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        value = float(trainer.callback_metrics[self.monitor])
        self.values[epoch] = value
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True


def make_sampler(settings: Any) -> Any:
    import optuna

    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    return optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=settings.startup_trials)


def make_pruner(settings: Any) -> Any:
    import optuna

    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=settings.trial_epochs, reduction_factor=3)
    if settings.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def storage_url(settings: Any, output_dir: Path) -> str:
    return str(settings.storage) if settings.get("storage") else f"sqlite:///{(output_dir / 'study.db').resolve()}"


def open_study(settings: Any, output_dir: Path) -> Any:
    """The study in ``search.storage`` (default: ``<run>/study.db``), created or loaded. Trials a killed process left
    RUNNING are failed (a shared database: by heartbeat; our own SQLite file: the run-folder lock says nobody else
    writes it), and the values of those with a checkpoint are queued again, to continue from it."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    own_file = not settings.get("storage")
    storage = optuna.storages.RDBStorage(storage_url(settings, output_dir), heartbeat_interval=None if own_file else 60,
                                         grace_period=None if own_file else 180)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", load_if_exists=True,
                                sampler=make_sampler(settings), pruner=make_pruner(settings))
    if own_file:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            storage.set_trial_state(trial._trial_id, TrialState.FAIL)
    else:
        optuna.storages.fail_stale_trials(study)
    queued = set()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        folder = Path(trial.user_attrs.get("folder", "/nonexistent"))
        key = json.dumps(trial.params, sort_keys=True)
        interrupted = (folder / "checkpoints" / "last.ckpt").is_file() and not (folder / "trial.json").is_file()
        marker = f"requeued trial {trial.number}"  # a finished trial's own attributes can no longer be set
        if interrupted and key not in queued and not study.user_attrs.get(marker):
            with warnings.catch_warnings():  # enqueue_trial is "experimental" in optuna 2.x; its use here is plain
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.enqueue_trial(trial.params)
            study.set_user_attr(marker, True)
            queued.add(key)
    if queued:
        log.info("search: %d interrupted trial(s) queued again, to continue from their checkpoints", len(queued))
    return study


def finished_trials(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def trial_folder(output_dir: Path, candidate: Candidate, training: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps({"student": candidate.key, "training": training}, sort_keys=True).encode())
    return output_dir / "trials" / digest.hexdigest()[:12]


class Search:
    """What every trial shares: the run's config, the data, the budget's limits, the run folder."""

    def __init__(self, cfg: DictConfig, output_dir: Path, limits: dict[str, float], datamodule: Any) -> None:
        self.cfg, self.settings, self.output_dir = cfg, cfg.search, output_dir
        self.limits, self.datamodule = limits, datamodule
        self.teacher_val_acc: float | None = None  # measured once, the first time a trial trains

    def objective(self, trial: Any) -> float:
        import optuna

        candidate, training = suggest(trial, self.settings.space, self.settings.get("training"))
        try:
            cost = budget_module.measure(candidate, self.datamodule, self.settings.budget, self.cfg.paths.cache_dir)
        except Exception as error:  # a candidate the runtime cannot take (an exporter or quantiser failure)
            trial.set_user_attr("candidate", candidate.label)
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
            log.warning("trial %d: %s could not be measured on %s (%s: %s); the trial fails, the search goes on",
                        trial.number, candidate.label, self.settings.budget.runtime, type(error).__name__, error)
            return float("nan")  # Optuna records the trial as failed
        folder = trial_folder(self.output_dir, candidate, training)
        for key, value in {"candidate": candidate.label, "folder": str(folder), "macs": cost["macs"],
                           "params": cost["params"], "bytes": cost["bytes"], "latency_ms": cost["latency_ms"]}.items():
            trial.set_user_attr(key, value)
        exceeded = budget_module.over(cost, self.limits)
        if exceeded:
            trial.set_user_attr("stopped_by", "budget")
            trial.set_user_attr("epochs", 0)
            log.info("trial %d: %s over budget (%s): not trained", trial.number, candidate.label, ", ".join(exceeded))
            raise optuna.TrialPruned()
        outcome = self.train(trial, candidate, training, folder)
        trial.set_user_attr("epochs", outcome["epochs_trained_here"])
        trial.set_user_attr("stopped_by", outcome["stopped_by"])
        if outcome["stopped_by"] == "pruner":
            raise optuna.TrialPruned()
        return float(outcome["value"])

    def train(self, trial: Any, candidate: Candidate, training: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Distil ``candidate`` for ``search.trial_epochs`` (or answer from its folder); the trial's outcome."""
        record = folder / "trial.json"
        if record.is_file():  # these values trained before: report what they did, train nothing
            outcome = dict(read_json(record))
            for epoch, value in sorted((int(e), v) for e, v in outcome["values"].items()):
                trial.report(value, epoch)
            return {**outcome, "epochs_trained_here": 0}
        from distill.fit import fit_model, seed_everything
        from distill.plan import prepare
        from distill.teacher.ensemble import obtain_teachers
        from distill.teacher.logits_cache import cached_teacher_outputs

        last = folder / "checkpoints" / "last.ckpt"
        resume = str(last) if last.is_file() else None
        trial_cfg = apply(self.cfg, candidate, training, **{
            "paths.output_dir": str(folder), "trainer.max_epochs": self.settings.trial_epochs, "logger": None,
            "report.enabled": False, "compress.steps": [], "ckpt_path": resume,
            "teacher_cache.runs_sharing": self.settings.trials})
        plan = prepare(trial_cfg)
        assert plan.teacher is not None and plan.loss_terms is not None, "a search distils: stage=distill"
        obtain_teachers(trial_cfg, plan.teacher, plan.datamodule, self.output_dir)  # trained once, in <run>/teacher
        if self.teacher_val_acc is None:
            from distill.measure import accuracy

            self.teacher_val_acc = accuracy(plan.teacher, plan.datamodule.val_dataloader(),
                                            plan.datamodule.num_classes)["top1"]
        outputs = cached_teacher_outputs(trial_cfg, plan.teacher, plan.datamodule, plan.loss_terms)
        seed_everything(trial_cfg.seed)
        reporter = TrialReporter(trial, trial_cfg.monitor)
        log.info("trial %d: %s%s, %d epochs%s", trial.number, candidate.label,
                 "".join(f", {k}={v}" for k, v in training.items()), self.settings.trial_epochs,
                 f" (continuing from {last})" if resume else "")
        result = fit_model(trial_cfg, plan.model, plan.datamodule, trial_cfg.loss, trial_cfg.optimizer,
                           trial_cfg.get("scheduler"), teacher=plan.teacher, ckpt_path=resume, teacher_outputs=outputs,
                           extra_callbacks=[reporter])
        epochs = len(reporter.values)
        outcome = {"value": result.monitored, "values": reporter.values, "candidate": candidate.label,
                   "training": training, "stopped_by": "pruner" if reporter.pruned_at is not None else None,
                   "test_acc_top1": result.metrics.get("test/acc_top1"), "epochs": epochs}
        write_json(record, outcome)
        return {**outcome, "epochs_trained_here": epochs}


def run_trials(cfg: DictConfig, output_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Measure the default student and train it at the trials' schedule (the reference), then run trials until
    ``search.trials`` have finished; the study, and the budget with the reference points."""
    settings = cfg.search
    datamodule = instantiate_checked(cfg.data)
    datamodule.check()
    datamodule.setup("fit")
    default = default_candidate(cfg)
    default_cost = budget_module.measure(default, datamodule, settings.budget, cfg.paths.cache_dir)
    limits = budget_module.resolve_limits(settings.budget, default_cost)
    log.info("search: budget %s on %s (the default student %s: %s)", budget_module.describe_limits(limits),
             settings.budget.runtime, default.label,
             ", ".join(f"{metric} {default_cost[metric]:.4g}" for metric in limits))
    study = open_study(settings, output_dir)
    search = Search(cfg, output_dir, limits, datamodule)
    reference = search.train(ReferenceTrial(), default, {}, trial_folder(output_dir, default, {}))
    teacher = Candidate.of(cfg.teacher.name, to_dict(cfg.teacher.get("kwargs")))
    teacher_cost = budget_module.measure(teacher, datamodule, settings.budget, cfg.paths.cache_dir)
    attempts = 0
    while finished_trials(study) < settings.trials:
        attempts += 1
        if attempts > 3 * settings.trials:  # most candidates fail to measure: a broken runtime, not bad luck
            raise ConfigError(f"{attempts - 1} trials ran and only {finished_trials(study)} finished (the others could "
                              f"not be measured on search.budget.runtime={settings.budget.runtime}; see the log); "
                              "try search.budget.runtime=onnx_fp32 or pytorch")
        study.optimize(search.objective, n_trials=1)
    budget = {"metric": settings.budget.metric, "runtime": settings.budget.runtime, "limits": limits,
              "threads": settings.budget.threads,
              "default_student": {"candidate": default.label, **default_cost, "val_acc_top1": reference["value"],
                                  "epochs": reference["epochs_trained_here"]},
              "teacher": {"candidate": teacher.label, **teacher_cost, "val_acc_top1": search.teacher_val_acc}}
    return study, budget


def trial_rows(study: Any, limits: dict[str, float]) -> list[dict[str, Any]]:
    """One row per finished trial: its student, training values, cost, accuracy and how it ended."""
    from optuna.trial import TrialState

    rows = []
    first_of: dict[str, int] = {}  # trial folder -> the first trial that trained those values
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        candidate, training = candidate_of(trial.params)
        stopped = trial.user_attrs.get("stopped_by")
        state = "complete" if trial.state == TrialState.COMPLETE else f"stopped by {stopped}"
        folder = trial.user_attrs.get("folder", "")
        if folder in first_of and stopped != "budget":  # proposed again: answered from the folder, not trained
            state = f"repeat of trial {first_of[folder]}"
        first_of.setdefault(folder, trial.number)
        rows.append({"trial": trial.number, "candidate": candidate.label, "architecture": candidate.name,
                     "kwargs": candidate.kwargs_dict, "training": training, "state": state,
                     "val_acc_top1": trial.value if state == "complete" else None,
                     "epochs": trial.user_attrs.get("epochs", 0), "macs": trial.user_attrs.get("macs"),
                     "params": trial.user_attrs.get("params"), "bytes": trial.user_attrs.get("bytes"),
                     "latency_ms": trial.user_attrs.get("latency_ms"),
                     "within_budget": not budget_module.over(trial.user_attrs, limits)})
    return rows
