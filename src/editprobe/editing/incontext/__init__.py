"""In-context editing (IKE, ike.py): no weight changes; the edited facts are kept in a memory and
put into the prompt of every query after a few demonstrations (docs/ike.md)."""
