"""
Pillar 1, policy: how much may run at once here.

Kubernetes label selectors (``_selectors``), Go-style JSON decoding with path-precise
problems (``_gojson``), the Velero node-agent document model (``_velero``), rules and
policies with their resolutions (``_rules``) and live reload of a policy file
(``_watch``). Imports nothing from the other pillars; everything public is re-exported by
:mod:`throttlekit`.
"""
