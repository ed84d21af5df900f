"""Repositories: functions that store and load the `shared.models` types.

Each takes the caller's `AsyncSession` first and never commits. Import them from
`shared.db`, which re-exports every public name.
"""
