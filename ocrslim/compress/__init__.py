"""Compression on the torch side: teacher import, structured pruning, vocabulary pruning, distillation
(losses, the training engine, the teacher-student character map)."""
