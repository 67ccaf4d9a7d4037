"""Teacher builders: any timm model, with weights from timm's hub, a local file, or a distill run.

A teacher without weights is trained by distill itself (see ``distill.teacher.weights_cache``); this package
only builds the network and loads what the config points at.
"""

from teachers.build import TeacherSource, build_teacher

__all__ = ["TeacherSource", "build_teacher"]
