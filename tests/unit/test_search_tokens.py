"""Chinese search: every run of characters in a title is found by its tokens."""

from __future__ import annotations

from services.cataloging import domain

#: Real titles of books in Chinese public libraries.
TITLES = ["围城", "活着", "平凡的世界", "白鹿原", "红楼梦", "三国演义", "水浒传", "西游记",
          "呐喊", "边城", "骆驼祥子", "四世同堂", "茶馆", "家", "朝花夕拾", "尘埃落定",
          "长恨歌", "许三观卖血记", "丰乳肥臀", "穆斯林的葬礼", "三体", "人生", "草房子",
          "城南旧事", "狼图腾", "文化苦旅", "我与地坛", "繁花", "额尔古纳河右岸",
          "钢铁是怎样炼成的"]


def found(query: str, title: str) -> bool:
    """What `to_tsquery(search_query) @@ to_tsvector(search_tokens)` answers, in Python."""
    wanted = domain.search_query(query)
    assert wanted is not None
    have = set(domain.search_tokens(title))
    return all(part.strip("'") in have for part in wanted.split(" & "))


def test_every_substring_of_every_title_finds_it() -> None:
    for title in TITLES:
        for size in range(1, len(title) + 1):
            for start in range(len(title) - size + 1):
                assert found(title[start:start + size], title), (title, start, size)


def test_two_character_queries_find_only_titles_that_hold_them() -> None:
    for query in ("世界", "三国", "城南", "旧事", "地坛"):
        assert [t for t in TITLES if found(query, t)] == [t for t in TITLES if query in t]


def test_latin_words_are_words_and_the_last_may_be_unfinished() -> None:
    assert domain.search_query("Wei che") == "'wei' & 'che':*"
    assert domain.search_tokens("Fortress Besieged", "Qian, Zhongshu") == [
        "fortress", "besieged", "qian", "zhongshu"]
    assert domain.search_query("!!! ...") is None
    assert domain.search_query("O'Brien") == "'o' & 'brien':*"  # no quote reaches tsquery
