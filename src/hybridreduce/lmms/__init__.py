"""lmms-eval integration, on the top floor: the ``hybridreduce`` plugin model (``model``), its entry point
(``plugin``), running lmms-eval and reading back what it wrote (``run``), and the study's local task (``tasks/``).
It drives inference; nothing below imports it."""
