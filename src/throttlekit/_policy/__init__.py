"""
Pillar 1, policy: how much may run at once here.

Kubernetes label selectors (``_selectors``), Go-style JSON decoding with path-precise
problems (``_gojson``), rules and policies with their resolutions (``_rules``), the Velero
node-agent document model and its adapter to a policy (``_velero``), node labels from
``kubectl`` output (``_nodes``) and live reload of a policy file (``_watch``). Imports
nothing from the other pillars; everything public is re-exported by :mod:`throttlekit`.
"""
