"""What the server tells others after the fact: signed results (and, with issue 16, events)."""
