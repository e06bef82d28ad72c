"""Gateway-minted, principal-bound sessions for the stateful protocol era."""
