"""Stacks: a team's models as a file in git, planned and applied against servers.

Modules: `schema` (the file's pydantic models), `load` (YAML -> validated stack, located
errors), `desired` (stack + Modelfiles -> desired model states), `actual` (a server's
state through the public API), `plan` (pure diff), `render_plan` (text / json / markdown),
`apply` (performs a plan), `gitdiff` (the same diff between two git commits).
"""
