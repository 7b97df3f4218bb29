"""Key encoding: distinct limits never share a key; one limit's keys share a cluster slot."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ratelimitd.store.keys import KeyEncoder, hash_slot

texts = st.one_of(st.text(max_size=12), st.sampled_from(["", "_", "|", "{", "}", "{}", "%7C", "a|b", ":", "="]))
idents = st.tuples(texts, texts, st.lists(texts, max_size=4).map(tuple))


@given(a=idents, b=idents)
def test_injective(a: tuple[str, str, tuple[str, ...]], b: tuple[str, str, tuple[str, ...]]) -> None:
    enc = KeyEncoder("rl:")
    ka = enc.key(enc.rule_part(a[0], a[1]), a[2])
    kb = enc.key(enc.rule_part(b[0], b[1]), b[2])
    assert (ka == kb) == (a == b)


@given(a=idents, b=idents)
def test_injective_with_hashed_values(a: tuple[str, str, tuple[str, ...]], b: tuple[str, str, tuple[str, ...]]) -> None:
    enc = KeyEncoder("rl:", hash_values=True)
    ka = enc.key(enc.rule_part(a[0], a[1]), a[2])
    kb = enc.key(enc.rule_part(b[0], b[1]), b[2])
    assert (ka == kb) == (a == b)
    for v in a[2]:
        if len(v) > 3 and v.isalnum():
            assert v not in ka


@given(ident=idents)
def test_single_well_formed_hash_tag(ident: tuple[str, str, tuple[str, ...]]) -> None:
    enc = KeyEncoder("p:")
    key = enc.key(enc.rule_part(ident[0], ident[1]), ident[2])
    assert key.startswith("p:{") and key.endswith("}")
    assert key.count("{") == 1 and key.count("}") == 1


def test_envoy_collision_does_not_happen() -> None:
    enc = KeyEncoder()
    assert enc.key(enc.rule_part("d", "r"), ("b_c",)) != enc.key(enc.rule_part("d_b", "r"), ("c",))


def test_hash_slot_known_values() -> None:
    # Values from the Redis Cluster specification's examples.
    assert hash_slot("123456789") == 0x31C3 % 16384
    assert hash_slot("{user1000}.following") == hash_slot("{user1000}.followers")
