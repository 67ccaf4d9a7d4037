"""Bad values a user can type, each with the message it must get (a regular expression).

Shared by ``tests/reliability/test_bad_values.py`` (each must fail in ``prepare``, before any data loads or model
trains) and table.py (``python -m scripts.bad_inputs``: each through the real command, for docs/reliability.md).
"""

from __future__ import annotations

# (overrides, expected message). Every one fails before training: most in the config pass, the rest while
# the models, data and trainer are built for the dry run.
BAD_VALUES: list[tuple[list[str], str]] = [
    (["optimizer.lr=abc"], r"optimizer.lr='abc' is not a number; expected a number > 0 and <= 10"),
    (["optimizer.lr=-0.1"], r"optimizer.lr=-0.1 is out of range; expected a number > 0"),
    (["optimizer.weight_decay=-1"], r"optimizer.weight_decay=-1 is out of range"),
    (["optimizer.momentum=1.5"], r"optimizer.momentum=1.5 is out of range; expected a number >= 0 and < 1"),
    (["seed=-1"], r"seed=-1 is out of range; expected an integer >= 0"),
    (["seed=abc"], r"seed='abc' is not an integer"),
    (["trainer.max_epochs=-3"], r"trainer.max_epochs=-3 is out of range; expected an integer >= 1 \(or -1\)"),
    (["trainer.max_epochs=0"], r"trainer.max_epochs=0 is out of range"),
    (["trainer.max_epochs=2.5"], r"trainer.max_epochs=2.5 is not an integer"),
    (["teacher.train.max_epochs=-1"], r"teacher.train.max_epochs=-1 is out of range; expected an integer >= 0"),
    (["teacher.train.optimizer.lr=0"], r"teacher.train.optimizer.lr=0 is out of range"),
    (["data.val_fraction=1.5"], r"data.val_fraction=1.5 is out of range; expected a number > 0 and < 1"),
    (["data.batch_size=0"], r"data.batch_size=0 is out of range; expected an integer >= 1"),
    (["data.eval_batch_size=-1"], r"data.eval_batch_size=-1 is out of range"),
    (["data.num_workers=-2"], r"data.num_workers=-2 is out of range; expected an integer >= 0 \(or auto\)"),
    (["data.image_size=0"], r"data.image_size=0 is out of range"),
    (["data.horizontal_flip=maybe"], r"data.horizontal_flip='maybe' is not a boolean"),
    (["data.split_seed=-5"], r"data.split_seed=-5 is out of range"),
    (["loss.kd.weight=1e30"], r"loss.kd.weight=1e\+30 is out of range; expected a number >= 0 and <= 1e\+06"),
    (["loss.kd.weight=-1"], r"loss.kd.weight=-1 is out of range"),
    (["loss.kd.temperature=0"], r"loss.kd.temperature=0 is out of range; expected a number > 0"),
    (["loss.kd.temperature=nan"], r"loss.kd.temperature=nan is not finite"),
    (["+loss.ce.label_smoothing=1.5"], r"loss.ce.label_smoothing=1.5 is out of range"),
    (["+loss.fitnett.weight=1"], r"unknown loss 'fitnett' \(did you mean fitnet\?\)"),
    (["teacher_cache.top_k=0"], r"teacher_cache.top_k=0 is out of range"),
    (["teacher_cache.top_k=10"], r"teacher_cache.top_k=10 keeps every class of this 10-class data"),
    (["report.repeats=0"], r"report.repeats=0 is out of range"),
    (["report.device=gpu0"], r"report.device='gpu0' is not a valid choice; expected one of auto, cpu, cuda"),
    (["trainer.precision=fp8"], r"trainer.precision='fp8' is not a valid choice"),
    (["trainer.accelerator=quantum"], r"trainer: You selected an invalid accelerator name.*check trainer.accelerator"),
    (["trainer.log_every_n_steps=0"], r"trainer.log_every_n_steps=0 is out of range"),
    (["monitor=val/acc"],
     r"monitor='val/acc' is not a metric this run logs \(did you mean val/acc_top5, val/acc_top1\?\)"),
    (["stage=baseline"], r"stage='baseline' is not a valid choice; expected one of distill, teacher"),
    (["resume=sometimes"], r"resume='sometimes' is not a valid choice"),
    (["guard.on_non_finite=ignore"], r"guard.on_non_finite='ignore' is not a valid choice"),
    (["student.name=cifar_resnet8x5"], r"unknown student model 'cifar_resnet8x5'.*cifar_resnet8x4"),
    (["ckpt_path=/no/such/last.ckpt"], r"ckpt_path=/no/such/last.ckpt does not exist"),
    # Training schemes (distill/schemes, docs/schemes.md).
    (["teachers=[]"], r"teachers=\[\] lists no teacher; list the ensemble's teachers, e.g. teachers=\[small_cnn"),
    (["teachers=[small_cnn,small_cnx]"], r"unknown teachers\[1\] model 'small_cnx'; did you mean: small_cnn"),
    (["teachers=[small_cnn,cifar_resnet20]", "ensemble.weights=[1]"],
     r"ensemble.weights=\[1\] has 1 weight\(s\) for 2 teachers \[small_cnn,cifar_resnet20\]; give one per "
     r"teacher, e.g. ensemble.weights=\[1,1\]"),
    (["ensemble.aggregate=median"], r"ensemble.aggregate='median' is not a valid choice; expected one of mean_probs"),
    (["chain=[small_cnn]"], r"chain=\[small_cnn\] needs at least a teacher and a student, e.g. chain=\["),
    (["chain=[small_cnn,cifar_resnet8x5]"], r"unknown chain\[1\] model 'cifar_resnet8x5'"),
    (["generations=0"], r"generations=0 is out of range; expected an integer >= 1"),
    (["stage=mutual", "teachers=[small_cnn]"],
     r"stage=mutual trains its peers from scratch without a teacher, but teachers=\[small_cnn\] is set; drop it"),
    (["mutual.peers=1"], r"mutual.peers=1 is out of range; expected an integer >= 2"),
    (["stage=teacher", "teachers=[small_cnn]"], r"stage=teacher trains one model.*teachers, chain and generations "
     r"need stage=distill"),
]

# Unknown presets: caught on the command line, before Hydra composes anything.
BAD_PRESETS: list[tuple[list[str], str]] = [
    (["student=resnet_nope"], r"student=resnet_nope is not a preset of 'student'.*available: .*small_cnn"),
    (["loss=nope"], r"loss=nope is not a preset of 'loss'.*available: .*kd"),
    (["data=digitz"], r"data=digitz is not a preset of 'data' \(did you mean digits\?\)"),
    (["-m", "loss=kd,fitnett"], r"loss=fitnett is not a preset of 'loss' \(did you mean fitnet\?\)"),
]
