"""Training-loop pieces: atomic checkpoints and checked resumes."""
from .checkpoint import (ResumeCheckHook, install_atomic_save,
                         newest_complete_checkpoint,
                         save_checkpoint_atomically)

__all__ = [
    'ResumeCheckHook', 'install_atomic_save', 'newest_complete_checkpoint',
    'save_checkpoint_atomically'
]
