"""Chinese prompts: the lexicon translator, its rules, MarianMT plumbing, the `prompt` command."""

from __future__ import annotations

import json
import re

import pytest

from sam3studio.errors import InputError, ModelSourceError
from sam3studio.prompts import Translation, identity_translator
from sam3studio.translate import LexiconTranslator, contains_cjk, get_translator, lexicon_stats, load_lexicon

CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]")

# Chinese prompt -> the English query expected (categories, colours, materials, sizes, textures,
# positions, 穿/戴 clauses, places, actions, quantities, conjunctions). Misses are printed.
PAIRS = [
    ("人", "person"),
    ("男人", "man"),
    ("女人", "woman"),
    ("小女孩", "girl"),
    ("男孩子", "boy"),
    ("婴儿", "baby"),
    ("老人", "old person"),
    ("警察", "police officer"),
    ("运动员", "athlete"),
    ("厨师", "chef"),
    ("猫", "cat"),
    ("小猫", "cat"),
    ("猫咪", "cat"),
    ("狗", "dog"),
    ("小狗", "dog"),
    ("狗狗", "dog"),
    ("幼犬", "puppy"),
    ("马", "horse"),
    ("羊", "sheep"),
    ("奶牛", "cow"),
    ("大象", "elephant"),
    ("熊", "bear"),
    ("斑马", "zebra"),
    ("长颈鹿", "giraffe"),
    ("鸟", "bird"),
    ("鸽子", "pigeon"),
    ("鸭子", "duck"),
    ("企鹅", "penguin"),
    ("兔子", "rabbit"),
    ("老鼠", "mouse"),
    ("猴子", "monkey"),
    ("狮子", "lion"),
    ("老虎", "tiger"),
    ("鱼", "fish"),
    ("蝴蝶", "butterfly"),
    ("蜘蛛", "spider"),
    ("汽车", "car"),
    ("轿车", "car"),
    ("小汽车", "car"),
    ("自行车", "bicycle"),
    ("摩托车", "motorcycle"),
    ("飞机", "airplane"),
    ("公交车", "bus"),
    ("火车", "train"),
    ("卡车", "truck"),
    ("船", "boat"),
    ("出租车", "taxi"),
    ("救护车", "ambulance"),
    ("直升机", "helicopter"),
    ("红绿灯", "traffic light"),
    ("消防栓", "fire hydrant"),
    ("停车标志", "stop sign"),
    ("停车计时器", "parking meter"),
    ("长椅", "bench"),
    ("背包", "backpack"),
    ("雨伞", "umbrella"),
    ("手提包", "handbag"),
    ("领带", "tie"),
    ("行李箱", "suitcase"),
    ("飞盘", "frisbee"),
    ("滑雪板", "ski"),
    ("风筝", "kite"),
    ("棒球棒", "baseball bat"),
    ("棒球手套", "baseball glove"),
    ("滑板", "skateboard"),
    ("冲浪板", "surfboard"),
    ("网球拍", "tennis racket"),
    ("瓶子", "bottle"),
    ("酒杯", "wine glass"),
    ("杯子", "cup"),
    ("叉子", "fork"),
    ("刀", "knife"),
    ("勺子", "spoon"),
    ("碗", "bowl"),
    ("香蕉", "banana"),
    ("苹果", "apple"),
    ("三明治", "sandwich"),
    ("橙子", "orange"),
    ("西兰花", "broccoli"),
    ("胡萝卜", "carrot"),
    ("热狗", "hot dog"),
    ("披萨", "pizza"),
    ("甜甜圈", "donut"),
    ("蛋糕", "cake"),
    ("椅子", "chair"),
    ("沙发", "couch"),
    ("盆栽", "potted plant"),
    ("床", "bed"),
    ("餐桌", "dining table"),
    ("马桶", "toilet"),
    ("电视", "tv"),
    ("笔记本电脑", "laptop"),
    ("鼠标", "computer mouse"),
    ("遥控器", "remote control"),
    ("键盘", "keyboard"),
    ("手机", "cell phone"),
    ("微波炉", "microwave"),
    ("烤箱", "oven"),
    ("烤面包机", "toaster"),
    ("水槽", "sink"),
    ("冰箱", "refrigerator"),
    ("书", "book"),
    ("时钟", "clock"),
    ("花瓶", "vase"),
    ("剪刀", "scissors"),
    ("泰迪熊", "teddy bear"),
    ("吹风机", "hair dryer"),
    ("牙刷", "toothbrush"),
    ("房子", "house"),
    ("窗户", "window"),
    ("门", "door"),
    ("屋顶", "roof"),
    ("楼梯", "stairs"),
    ("树", "tree"),
    ("花", "flower"),
    ("草地", "grass"),
    ("天空", "sky"),
    ("云", "cloud"),
    ("山", "mountain"),
    ("石头", "rock"),
    ("河", "river"),
    ("帽子", "hat"),
    ("眼镜", "glasses"),
    ("鞋子", "shoe"),
    ("衬衫", "shirt"),
    ("裤子", "pants"),
    ("裙子", "dress"),
    ("外套", "jacket"),
    ("手套", "glove"),
    ("口罩", "mask"),
    ("头", "head"),
    ("手", "hand"),
    ("眼睛", "eye"),
    ("脸", "face"),
    ("头发", "hair"),
    ("腿", "leg"),
    ("锤子", "hammer"),
    ("螺丝刀", "screwdriver"),
    ("扳手", "wrench"),
    ("梯子", "ladder"),
    ("裂缝", "crack"),
    ("锈迹", "rust"),
    ("划痕", "scratch"),
    ("凹痕", "dent"),
    ("污渍", "stain"),
    ("坑洼", "pothole"),
    ("轮胎", "tire"),
    ("车牌", "license plate"),
    ("路灯", "street light"),
    ("锥桶", "traffic cone"),
    ("人行道", "sidewalk"),
    ("垃圾桶", "trash can"),
    ("红色", "red"),
    ("蓝色", "blue"),
    ("红色的汽车", "red car"),
    ("蓝色的车", "blue car"),
    ("绿色的树", "green tree"),
    ("黄色的花", "yellow flower"),
    ("白色的猫", "white cat"),
    ("黑狗", "black dog"),
    ("灰色的大象", "gray elephant"),
    ("粉色的裙子", "pink dress"),
    ("紫色的花", "purple flower"),
    ("棕色的熊", "brown bear"),
    ("橙色的球", "orange ball"),
    ("金色的头发", "golden hair"),
    ("银色的汽车", "silver car"),
    ("深蓝色的外套", "navy blue jacket"),
    ("浅蓝色的衬衫", "light blue shirt"),
    ("彩色的气球", "colorful balloon"),
    ("木头桌子", "wooden table"),
    ("木头", "wood"),
    ("金属椅子", "metal chair"),
    ("塑料瓶", "plastic bottle"),
    ("玻璃杯", "glass"),
    ("玻璃窗户", "glass window"),
    ("石头墙", "stone wall"),
    ("皮沙发", "leather couch"),
    ("陶瓷碗", "ceramic bowl"),
    ("纸箱", "box"),
    ("布娃娃", "fabric doll"),
    ("大狗", "big dog"),
    ("小桌子", "small table"),
    ("巨大的石头", "huge rock"),
    ("高楼", "tall building"),
    ("长桌子", "long table"),
    ("大红色木头桌子", "big red wooden table"),
    ("小白狗", "small white dog"),
    ("大黑猫", "big black cat"),
    ("毛茸茸的猫", "fluffy cat"),
    ("条纹衬衫", "striped shirt"),
    ("光滑的石头", "smooth rock"),
    ("圆桌", "round table"),
    ("方形的盒子", "square box"),
    ("生锈的管子", "rusty pipe"),
    ("生锈", "rust"),
    ("破损的路面", "damaged road"),
    ("脏衣服", "dirty clothes"),
    ("旧自行车", "old bicycle"),
    ("空瓶子", "empty bottle"),
    ("打开的门", "open door"),
    ("最左边的人", "leftmost person"),
    ("最右边的车", "rightmost car"),
    ("左边的人", "left person"),
    ("右边的狗", "right dog"),
    ("中间的猫", "center cat"),
    ("中间的人", "center person"),
    ("上面的杯子", "top cup"),
    ("下面的书", "bottom book"),
    ("前面的车", "front car"),
    ("后面的树", "back tree"),
    ("最左边的红色汽车", "leftmost red car"),
    ("穿白衣服的人", "person in white clothes"),
    ("穿红色衣服的女孩", "girl in red clothes"),
    ("穿着黑色外套的男人", "man in black jacket"),
    ("穿蓝色裙子的女人", "woman in blue dress"),
    ("戴帽子的人", "person wearing hat"),
    ("戴眼镜的男人", "man wearing glasses"),
    ("戴着口罩的女人", "woman wearing mask"),
    ("戴红色帽子的孩子", "child wearing red hat"),
    ("穿白衣服的", "person in white clothes"),
    ("天上飞的鸟", "flying bird"),
    ("跑步的人", "running person"),
    ("奔跑的狗", "running dog"),
    ("坐着的猫", "sitting cat"),
    ("站着的人", "standing person"),
    ("躺着的狗", "lying dog"),
    ("睡觉的婴儿", "sleeping baby"),
    ("水里游的鱼", "swimming fish"),
    ("停着的汽车", "parked car"),
    ("在草地上跑的狗", "running dog"),
    ("骑自行车的人", "person riding bicycle"),
    ("骑马的人", "person riding horse"),
    ("吃草的牛", "cow eating grass"),
    ("拿着伞的人", "person holding umbrella"),
    ("牵着狗的女人", "woman walking dog"),
    ("坐在椅子上的猫", "cat sitting on chair"),
    ("躺在沙发上的狗", "dog lying on couch"),
    ("打电话的男人", "man talking on the phone"),
    ("桌子上的杯子", "cup on table"),
    ("桌子上面的书", "book on table"),
    ("床上的猫", "cat on bed"),
    ("水里的鱼", "fish in water"),
    ("盒子里的猫", "cat in box"),
    ("树上的鸟", "bird on tree"),
    ("桌子下面的狗", "dog under table"),
    ("汽车旁边的人", "person next to car"),
    ("门前面的人", "person in front of door"),
    ("汽车后面的人", "person behind car"),
    ("墙上的画", "painting on wall"),
    ("有裂缝的墙", "wall with crack"),
    ("带轮子的箱子", "box with wheel"),
    ("汽车的轮胎", "car tire"),
    ("红色汽车的车门", "red car car door"),
    ("猫和狗", "cat and dog"),
    ("红色的汽车和蓝色的卡车", "red car and blue truck"),
    ("一只猫", "cat"),
    ("一辆红色的汽车", "red car"),
    ("两只狗", "dog"),
    ("所有的人", "person"),
    ("全部的车", "car"),
    ("这些苹果", "apple"),
    ("一群羊", "sheep"),
    ("三个苹果", "apple"),
    ("3个苹果", "apple"),
    ("找出图中所有的猫", "cat"),
    ("空中的气球", "balloon in the sky"),
    ("路上的行人", "person on road"),
    ("停车场里的车", "car in parking lot"),
    ("穿红衣服的小孩", "child in red clothes"),
    ("墙上的裂缝", "crack on wall"),
    ("白色墙上的裂缝", "crack on white wall"),
    ("生锈的铁门", "rusty iron door"),
    ("木制的椅子", "wooden chair"),
    ("玻璃瓶", "glass bottle"),
    ("金属管道", "metal pipe"),
    ("破碎的玻璃", "shattered glass"),
    ("地上的垃圾", "trash on the ground"),
    ("墙上的涂鸦", "graffiti on wall"),
    ("人群中的男人", "man in crowd"),
    ("桌子上的红色杯子", "red cup on table"),
    ("白色的小狗", "white dog"),
    ("一个穿西装的男人", "man in suit"),
    ("拿着手机的女孩", "girl holding cell phone"),
    ("在水中游泳的鸭子", "swimming duck"),
    ("飞行的飞机", "flying airplane"),
    ("停在路边的汽车", "car parked at roadside"),
    ("左上角的标志", "top-left sign"),
    ("右下角的文字", "bottom-right text"),
    ("远处的山", "distant mountain"),
    ("透明的塑料袋", "transparent plastic bag"),
    ("一杯咖啡", "coffee"),
    ("碗里的面条", "noodles in bowl"),
    ("盘子里的食物", "food on plate"),
    ("戴头盔骑摩托车的人", "person wearing helmet riding motorcycle"),
    ("穿黄色雨衣的孩子", "child in yellow raincoat"),
    ("有斑点的狗", "spotted dog"),
    ("带花纹的地毯", "patterned rug"),
    ("桌上的笔记本电脑", "laptop on table"),
    ("沙发上的抱枕", "cushion on couch"),
    ("路面上的坑洼", "pothole on road"),
    ("金属表面的划痕", "scratch on metal surface"),
    ("车身上的凹痕", "dent on car body"),
    ("最大的苹果", "biggest apple"),
    ("最小的狗", "smallest dog"),
    ("金属表面上的划痕", "scratch on metal surface"),
    ("戴帽子穿红衣服的人", "person wearing hat in red clothes"),
    ("桌子上的一本书", "book on table"),
    ("地上的影子", "shadow on the ground"),
    ("树下的长椅", "bench under tree"),
]


@pytest.fixture(scope="module")
def translator() -> LexiconTranslator:
    return LexiconTranslator().warm_up()


def test_pair_table_exact_match_rate(translator):
    assert len(PAIRS) >= 200
    assert len({zh for zh, _ in PAIRS}) == len(PAIRS), "duplicate prompts in the table"
    misses = []
    for zh, expected in PAIRS:
        got = translator(zh)
        if got.query != expected or got.unknown:
            misses.append((zh, expected, got.query, got.unknown))
    for zh, expected, query, unknown in misses:
        print(f"MISS {zh!r}: expected {expected!r}, got {query!r} unknown={unknown}")
    rate = 1 - len(misses) / len(PAIRS)
    print(f"exact-match rate {rate:.3f} ({len(PAIRS) - len(misses)}/{len(PAIRS)})")
    assert rate >= 0.95


def test_table_covers_every_kind(translator):
    kinds = {"color": "red", "material": "wooden", "position": "leftmost", "size": "big", "texture": "striped",
             "action": "flying", "state": "rusty"}
    queries = " ".join(en for _, en in PAIRS)
    for kind, word in kinds.items():
        assert word in queries.split(), kind


@pytest.mark.parametrize(("text", "expected"), [
    ("紅色的汽車", "red car"),
    ("木頭桌子", "wooden table"),
    ("戴眼鏡的男人", "man wearing glasses"),
    ("天上飛的鳥", "flying bird"),
    ("腳踏車", "bicycle"),
    ("計程車", "taxi"),
    ("最左邊的貓", "leftmost cat"),
])
def test_traditional_characters(translator, text, expected):
    assert translator(text) == Translation(expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("红色 car", "red car"),
    ("red 汽车", "red car"),
    ("红色的car", "red car"),
    ("big 红色 car", "big red car"),
    ("穿 red 衣服的人", "person in red clothes"),
    ("ＲＥＤ 汽车", "RED car"),  # full-width letters are normalised
])
def test_mixed_input(translator, text, expected):
    assert translator(text).query == expected


def test_unknown_words_are_reported_not_sent(translator):
    got = translator("咕噜噜的猫")
    assert got == Translation("cat", ("咕噜噜",))
    got = translator("红色的汽车和叽里咕噜")
    assert got.query == "red car"
    assert got.unknown == ("叽里咕噜",)


def test_negation_is_kept(translator):
    assert translator("没有戴口罩的人").query == "person without mask"
    assert translator("没戴帽子的男人").query == "man without hat"


def test_nothing_understood_is_an_input_error(translator):
    with pytest.raises(InputError, match="咕噜噜"):
        translator("咕噜噜")


@pytest.mark.parametrize("text", ["dog", "Red Car", "person, with: punctuation!", "  spaced  ", "café au lait", "", "3 cats"])
def test_english_passes_through_unchanged(text):
    fresh = LexiconTranslator()
    assert fresh(text) == Translation(text)
    assert fresh._jieba is None  # nothing loaded for English


def test_query_never_contains_cjk(translator):
    samples = [zh for zh, _ in PAIRS] + ["咕噜噜的猫", "一只可爱的小猫在沙发上睡觉", "日本語のテキスト猫", "한국어 고양이",
                                        "我想要找到图片里面那个看起来很奇怪的东西", "猫🐱狗"]
    for text in samples:
        try:
            got = translator(text)
        except InputError:
            continue
        assert not CJK.search(got.query), (text, got.query)
        assert not contains_cjk(got.query)
        assert got.query == got.query.strip() and "  " not in got.query


def test_contains_cjk():
    assert contains_cjk("红色 car") and contains_cjk("紅") and contains_cjk("ねこ") and contains_cjk("고양이")
    assert not contains_cjk("red car") and not contains_cjk("café, 3 dogs!")


def test_segmentation_uses_lexicon_words(translator):
    assert translator.segment("穿白衣服的人") == ["穿", "白", "衣服", "的", "人"]
    assert translator.segment("红色的汽车") == ["红色", "的", "汽车"]


def test_thread_safe_lazy_load():
    from concurrent.futures import ThreadPoolExecutor

    fresh = LexiconTranslator()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fresh, ["红色的汽车"] * 16))
    assert {r.query for r in results} == {"red car"}


def test_extra_entries():
    tr = LexiconTranslator(extra={"皮卡丘": ("pikachu", "noun")})
    assert tr("黄色的皮卡丘").query == "yellow pikachu"


def test_jieba_cache_not_in_package(translator):
    from pathlib import Path

    import sam3studio.translate as pkg

    package_dir = Path(pkg.__file__).parent
    assert not Path(translator._jieba.tmp_dir).resolve().is_relative_to(package_dir.resolve())
    assert not list(package_dir.rglob("*.cache"))


def test_lexicon_coverage():
    stats = lexicon_stats()
    assert stats["noun"] >= 800 and stats["english_nouns"] >= 800
    for kind in ("color", "material", "size", "texture", "position", "action"):
        assert stats[kind] >= 15, kind
    lex = load_lexicon()
    english = {e.english for e in lex.values() if e.kind == "noun"}
    coco = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
            "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
            "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
            "ski", "snowboard", "ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
            "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
            "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
            "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "remote control",
            "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
            "scissors", "teddy bear", "hair dryer", "toothbrush"]
    assert len(coco) == 80
    assert not [c for c in coco if c not in english]
    for defect in ("crack", "rust", "scratch", "dent", "stain", "pothole", "corrosion"):
        assert defect in english
    assert not any(contains_cjk(e.english) or contains_cjk(e.alone) for e in lex.values())


def test_lexicon_file_is_well_formed():
    from sam3studio.translate.lexicon import _parse

    with pytest.raises(ValueError, match="kind"):
        _parse("猫\tcat\tanimal\n", "x.tsv")
    with pytest.raises(ValueError, match="twice"):
        _parse("猫\tcat\tnoun\n猫\tkitty\tnoun\n", "x.tsv")
    with pytest.raises(ValueError, match="expected"):
        _parse("猫 cat noun\n", "x.tsv")


# ---------------------------------------------------------------------------- get_translator
def test_get_translator_specs(tmp_path):
    assert isinstance(get_translator(None), LexiconTranslator)
    assert isinstance(get_translator("lexicon"), LexiconTranslator)
    assert get_translator("none") is identity_translator
    with pytest.raises(ModelSourceError, match="unknown translator"):
        get_translator("no-such-thing")
    with pytest.raises(ModelSourceError, match="config.json"):
        get_translator(str(tmp_path))  # a folder, but not a model


def test_marian_missing_directory(tmp_path):
    from sam3studio.translate import MarianTranslator

    with pytest.raises(ModelSourceError, match="does not exist"):
        MarianTranslator(tmp_path / "missing")


def test_marian_unloadable_directory(tmp_path):
    from sam3studio.translate import MarianTranslator

    (tmp_path / "config.json").write_text("{}")
    tr = MarianTranslator(tmp_path)
    assert tr("dog") == Translation("dog")  # English never loads the model
    with pytest.raises(ModelSourceError, match="MarianMT"):
        tr("狗")


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory):
    """A randomly initialised, tiny MarianMT model with a word-level fast tokenizer (no sentencepiece)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "red", "car", "dog", "cat", "the", "a", "狗", "猫", "红色", "汽车"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = MarianConfig(vocab_size=len(words), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=64, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                          forced_eos_token_id=1)
    torch.manual_seed(0)
    model = MarianMTModel(config)
    path = tmp_path_factory.mktemp("tiny-marian")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_marian_translator_end_to_end(tiny_marian):
    tr = get_translator(str(tiny_marian))
    from sam3studio.translate import MarianTranslator

    assert isinstance(tr, MarianTranslator)
    assert tr("red car") == Translation("red car")
    got = tr("红色 汽车")  # random weights: the words are meaningless, the plumbing is what is tested
    assert isinstance(got, Translation)
    assert not contains_cjk(got.query)
    assert all(contains_cjk(w) for w in got.unknown)
    assert tr._model is not None and tr("狗") == tr("狗")  # loaded once, deterministic


def test_marian_with_monkeypatched_model(tiny_marian, monkeypatch):
    from sam3studio.translate import MarianTranslator

    tr = MarianTranslator(tiny_marian).load()
    monkeypatch.setattr(tr._tokenizer, "decode", lambda ids, skip_special_tokens=True: "a red car 汽车.")
    assert tr("红色的汽车") == Translation("a red car", ("汽车",))


# ---------------------------------------------------------------------------- CLI and engine
def test_cli_prompt_table():
    from typer.testing import CliRunner

    from sam3studio.cli import app

    result = CliRunner().invoke(app, ["prompt", "红色的汽车, 小狗", "dog", "咕噜噜的猫"])
    assert result.exit_code == 0, result.output
    for text in ("红色的汽车", "red car", "小狗", "dog", "咕噜噜", "cat"):
        assert text in result.output


def test_cli_prompt_json():
    from typer.testing import CliRunner

    from sam3studio.cli import app

    result = CliRunner().invoke(app, ["prompt", "红色的汽车，小狗、咕噜噜的猫", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["prompts"] == [
        {"text": "红色的汽车", "query": "red car", "unknown_words": [], "error": None},
        {"text": "小狗", "query": "dog", "unknown_words": [], "error": None},
        {"text": "咕噜噜的猫", "query": "cat", "unknown_words": ["咕噜噜"], "error": None},
    ]


def test_cli_prompt_errors():
    from typer.testing import CliRunner

    from sam3studio.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["prompt", "咕噜噜", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["prompts"][0]["error"]
    result = runner.invoke(app, ["prompt", "dog", "--translator", "nope"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["prompt", "狗", "--translator", "none", "--json"])
    assert json.loads(result.output)["prompts"][0]["query"] == "狗"


def test_segmenter_with_lexicon_translator(tiny_checkpoint, cat_photo):
    from sam3studio import load_segmenter

    seg = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32", translator=LexiconTranslator())
    result = seg.segment(cat_photo, "猫, 红色的汽车", score_threshold=0.01)
    assert [(p.text, p.query, p.unknown_words) for p in result.prompts] == [
        ("猫", "cat", ()),
        ("红色的汽车", "red car", ()),
    ]
    assert {inst.prompt for inst in result} <= {"猫", "红色的汽车"}
