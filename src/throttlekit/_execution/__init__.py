"""
Pillar 2, execution: run the work in parallel without losing an error.

Item blocks and their result records (``_blocks``), the ItemBlock worker pool
(``_pool``) and operation limits per kind and key with priority (``_operation_limits``).
Imports nothing from the other pillars; everything public is re-exported by
:mod:`throttlekit`.
"""
