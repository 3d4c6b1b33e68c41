"""The share rule of the alert servers' leases (``event_store.leases.fair_share``): each
server's target from what it sees, and the whole fleet's outcome when every server applies it
in turn, as the lease cycles do."""

from __future__ import annotations

from collections import Counter

from event_store.leases import LeaseToken, fair_share, share_of


def _tokens(owners: dict[str, int], free: int = 0) -> dict[str, LeaseToken]:
    tokens = {
        f"{o}-{n}": LeaseToken(o, 1, None) for o, count in owners.items() for n in range(count)
    }
    tokens.update({f"free-{n}": LeaseToken("", 1, None) for n in range(free)})
    return tokens


def test_a_joiner_among_servers_holding_the_rounded_up_share_gets_its_share() -> None:
    # 9 instances, 3 each, a fourth joins: ceil(9/4) = 3 let everyone keep 3 and it got 0.
    held = {"a": 3, "b": 3, "c": 3}
    for me in held:
        others = _tokens({o: n for o, n in held.items() if o != me})
        assert fair_share(held[me], others, [*(o for o in held if o != me), "d"]) == 2
    # The joiner, seeing nobody else short, takes up to the rounded-up share.
    assert fair_share(0, _tokens(held), ["a", "b", "c"]) == 3


def test_even_counts_have_one_share() -> None:
    assert fair_share(3, _tokens({"b": 3, "c": 3}), ["b", "c"]) == 3
    assert fair_share(0, _tokens({}, free=12), ["b", "c", "d"]) == 3


def test_a_dead_servers_leases_count_in_the_total_but_not_as_a_live_holder() -> None:
    # "gone" is not among the live servers: its 3 leases are shared by the two left, 4 or 5
    # each; while b holds fewer than 4, this one claims no more than 4.
    assert fair_share(3, _tokens({"b": 3, "gone": 3}), ["b"]) == 4
    assert fair_share(4, _tokens({"b": 4, "gone": 1}), ["b"]) == 5


def _settle(servers: list[str], owners: dict[str, int], free: int) -> dict[str, int]:
    """Every server in turn: release beyond its share, then claim free leases up to it."""
    held, pool = dict(owners), free
    for _ in range(10):
        before = (dict(held), pool)
        for me in servers:
            others = _tokens({o: n for o, n in held.items() if o != me}, pool)
            share = fair_share(held.get(me, 0), others, [s for s in servers if s != me])
            if held.get(me, 0) > share:
                pool += held[me] - share
                held[me] = share
            take = min(pool, share - held.get(me, 0))
            if take > 0:
                held[me] = held.get(me, 0) + take
                pool -= take
        if (held, pool) == before:
            return held
    raise AssertionError(f"no steady state: {held}, {pool} free")


def test_the_fleet_settles_with_the_joiner_holding_its_share() -> None:
    settled = _settle(["a", "b", "c", "d"], {"a": 3, "b": 3, "c": 3}, 0)
    assert sum(settled.values()) == 9
    assert sorted(settled.values()) == [2, 2, 2, 3] and settled["d"] >= 2
    assert _settle(["a", "b", "c"], {"a": 9}, 0) == {"a": 3, "b": 3, "c": 3}
    assert sorted(_settle(["a", "b"], {}, 7).values()) == [3, 4]


def test_the_share_from_counts_is_the_share_from_tokens() -> None:
    # A created instance's claim reckons the share from counts per owner (one grouped read).
    for owners, free, live in [
        ({"a": 3, "b": 3, "c": 3}, 0, ["a", "b", "c", "d"]),
        ({"b": 3, "gone": 3}, 1, ["b"]),
        ({"b": 4, "c": 2}, 5, ["b", "c"]),
        ({}, 12, ["b", "c", "d"]),
        ({"b": 0}, 7, []),
    ]:
        for owned in range(6):
            tokens = _tokens(owners, free)
            counts = Counter(t.owner for t in tokens.values())
            assert share_of(owned, counts, live) == fair_share(owned, tokens, live)
