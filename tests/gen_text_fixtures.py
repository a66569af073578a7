#!/usr/bin/env python3
"""Generate the tokenizer fixtures of tests/test_text.c with Hugging Face `tokenizers`.

    pip install tokenizers==0.23.3 unicodedata2==16.0.0     (the reference: tokenizers 0.23.x)
    make build/test_text
    python3 tests/gen_text_fixtures.py            # from the repository root
    python3 tests/gen_text_fixtures.py --unicode-tables > /tmp/unitab.h

What it writes into tests/fixtures/text/:
  hf_bpe/vocab.json, hf_bpe/merges.txt   a byte-level BPE trained by tokenizers'
                                         ByteLevelBPETokenizer (vocab 1000, min_frequency 2,
                                         special token <|endoftext|>) on the same caption
                                         corpus as weights/tiny_vocab
  hf_bpe/tokenizer.json                  the same with the six MaMA special tokens added
                                         (merges saved as [a, b] pairs, tokenizers >= 0.20)
  hf_bpe/tokenizer_string_merges.json    the same with merges as "a b" strings (older format)
  cases.txt                              for each text: T <hex of UTF-8 text>
                                           P <hex pieces of the GPT-2 pre-tokenizer>
                                           A <ids with weights/tiny_vocab>
                                           B <ids with hf_bpe>
  unicode16.txt                          the same four lines for texts with letters and digits
                                         new in Unicode 15.0-16.0 (UNICODE16 below)
  hf_classes.txt                         the class (L letter, N number, S whitespace; the rest
                                         is "other") that tokenizers' ByteLevel regex gives every
                                         code point, as inclusive hex ranges, found by
                                         pre-tokenizing "a"+c, "1"+c and "!"+c; it is checked
                                         against unicodedata2's L* / N* (they must agree)
Both tokenizers get <|endoftext|> (already in the vocabulary) and then the six special tokens
of SPEC A.2 as special added tokens, which is what the C loader does.
--unicode-tables prints the \\p{L} / \\p{N} range tables of mama.h section 8.1 from the PyPI
package unicodedata2 16.0.0 (Unicode 16.0.0, the version of tokenizers 0.23's Oniguruma; Python
3.11's own unicodedata is Unicode 14.0.0).
"""
import json
import os
import subprocess
import sys
import tempfile

REF_TOKENIZERS = "0.23."      # the reference: tokenizers 0.23.x (fixtures made with 0.23.3)
REF_UNICODE = "16.0.0"        # unicodedata2 16.0.0 = Unicode 16.0.0, as tokenizers 0.23's regex


def unicodedata16():
    import unicodedata2
    if unicodedata2.unidata_version != REF_UNICODE:
        raise SystemExit("need unicodedata2==%s (got Unicode %s)" % (REF_UNICODE, unicodedata2.unidata_version))
    return unicodedata2

SIX = ["<|startoftext|>", "<|padtext|>", "<|masktext|>", "<|separatetext|>", "<|unknowntext|>", "<|keytext|>"]
EOS = "<|endoftext|>"

# Awkward text: what a byte-level BPE must survive (the captions come from the C caption builder).
AWKWARD = [
    "", " ", "  ", "\n", "Hello world", "Hello  world", "Hello   world  ", "  leading spaces", "trailing   ",
    "tabs\tand\nnewlines\r\n\nend", "a\n\n\nb", " \t x", "x \t", "\t\tindent", "line1\n  line2\n\tline3\n",
    "It's we're they've I'm you'll he'd can't won't", "IT'S WE'RE", "'s's'", "''quote''", "rock 'n' roll",
    "'tis the season", "don''t", "it's'", "x'S 'T 'Re",
    "12345 67 8.9 1,000,000 3.14159 -42 +7 1e-5", "x\u00b2\u00b3 \u00bd \u216b \u0663\u0664\u0665 \u2460\u2461",
    "ABC123def456", "x1y2z3", "3D2D", "BI-RADS 4A", "MG Screen Bilat w/Tomo/CAD Stnd Protocol",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u00fcber stra\u00dfe", "cafe\u0301 e\u0301e\u0301",
    "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5",
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440, \u043c\u0430\u043c\u043c\u043e\u0433\u0440\u0430\u0444\u0438\u044f!",
    "\u4e73\u817a\u764c\u7b5b\u67e5 \u65e5\u672c\u8a9e\u30c6\u30ad\u30b9\u30c8\u3002\u3001",
    "\uc720\ubc29\ucd2c\uc601\uc220 \uac80\uc0ac", "\u0627\u0644\u062a\u0635\u0648\u064a\u0631 \u0627\u0644\u0634\u0639\u0627\u0639\u064a",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd", "\u0e01\u0e32\u0e23\u0e15\u0e23\u0e27\u0e08 \u0e21\u0e30\u0e40\u0e23\u0e47\u0e07",
    "\u0938\u094d\u0924\u0928 \u0915\u0948\u0902\u0938\u0930", "\U0001d400\U0001d401\U0001d402 \U0001d7cf\U0001d7d0\U0001d7d1",
    "\U0001f44d\U0001f3fd \U0001f600\U0001f600 \U0001f1eb\U0001f1f7 \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "emoji\U0001f600word \U0001f600 word", "Hello!!! ... ??? --- (a) [b] {c} <d> @#$%^&*_=+~`|\\",
    "a.b;c:d,e!f?g", "...", " ... ", "!!!abc", "abc!!!", "x -- y", " !", "  !",
    "\u00a0nbsp\u00a0", "em\u2003space", "ideographic\u3000space", "\u001c\u001d\u001e\u001f separators",
    "\x0b\x0c vt ff", "\u0085nel\u0085", "zero\u200bwidth", "\u2028line\u2029para", "a \u00a0b", "a\u00a0 b",
    "\u0301\u0301", "\ue000\uf8ff private", "\U000e0001\U000e0020 tags", "\ufeffbom", "\u00ad soft\u00adhyphen",
    "<|startoftext|>hi<|separatetext|> there<|endoftext|>", "<|endoftext|><|endoftext|>", "<|padtext|",
    "<<|keytext|>>", "<|masktext|> <|unknowntext|>", "x<|startoftext|>y", "<|separatetext|>.<|separatetext|>",
    "<|endoftext|>ing", " <|endoftext|> ",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "mammogrammammogrammammogram",
    "mammography" * 60, "The breast is heterogeneously dense. " * 8,
    "  Findings:  The   mammogram\tshows\nthat  ", "unknown unknown, unknown.",
]

# Letters and digits new in Unicode 15.0 / 15.1 / 16.0 (category L* or N* in unicodedata2 16.0,
# unassigned in Unicode 14), mixed with ASCII, spaces and punctuation.
U16_LETTERS = {  # a few per script, in the order they are used below
    "kawi": "\U00011f04\U00011f12",                       # 15.0 Kawi letters A, KA (Lo)
    "nag_mundari": "\U0001e4d0\U0001e4e0",                # 15.0 Nag Mundari O, UC (Lo)
    "cjk_h": "\U00031350",                                 # 15.0 CJK Ext-H (Lo)
    "cjk_i": "\U0002ebf0\U0002ee5d",                      # 15.1 CJK Ext-I first/last (Lo)
    "latin15": "\U0001df25",                               # 15.0 Latin small d with mid-height hook (Ll)
    "cyr_mod": "\U0001e030",                               # 15.0 modifier Cyrillic small a (Lm)
    "arabic15": "\U00010ec2",                              # 15.0 Arabic dal with two dots (Lo)
    "garay": "\U00010d50\U00010d5a\U00010d70\U00010d4a\U00010d4e",  # 16.0 Garay Lu Lu Ll Lo Lm
    "gurung_khema": "\U00016100\U00016110",               # 16.0 Gurung Khema A, TA (Lo)
    "kirat_rai": "\U00016d50\U00016d40\U00016d6b",       # 16.0 Kirat Rai DDA (Lo), signs (Lm)
    "ol_onal": "\U0001e5d0\U0001e5e0",                    # 16.0 Ol Onal O, ID (Lo)
    "sunuwar": "\U00011bc0\U00011bd0",                    # 16.0 Sunuwar DEVI, LOACHA (Lo)
    "todhri": "\U000105c0\U000105d0",                     # 16.0 Todhri A, HA (Lo)
    "tulu_tigalari": "\U00011380\U00011390\U000113a0\U000113d1",  # 16.0 Tulu-Tigalari (Lo)
    "latin16": "\ua7cb\ua7dc",                            # 16.0 Latin capitals (Lu)
    "cyr16": "\u1c89\u1c8a",                              # 16.0 Cyrillic TJE (Lu, Ll)
    "egyptian": "\U00013460",                              # 16.0 Egyptian hieroglyphs Ext-A (Lo)
}
U16_DIGITS = {
    "kawi": "\U00011f50\U00011f59",                       # 15.0 Kawi digits 0, 9 (Nd)
    "nag_mundari": "\U0001e4f0\U0001e4f7",                # 15.0 (Nd)
    "kaktovik": "\U0001d2c0\U0001d2d3",                   # 15.0 Kaktovik numerals 0, 19 (No)
    "garay": "\U00010d40\U00010d49",                      # 16.0 (Nd)
    "gurung_khema": "\U00016130\U00016139",               # 16.0 (Nd)
    "kirat_rai": "\U00016d70\U00016d79",                  # 16.0 (Nd)
    "ol_onal": "\U0001e5f1\U0001e5fa",                    # 16.0 (Nd)
    "sunuwar": "\U00011bf0\U00011bf9",                    # 16.0 (Nd)
    "myanmar_c": "\U000116d0\U000116e3",                  # 16.0 Myanmar Extended-C (Nd)
    "outlined": "\U0001ccf0\U0001ccf9",                   # 16.0 outlined digits (Nd)
}
_L, _D = U16_LETTERS, U16_DIGITS
UNICODE16 = [v for v in _L.values()] + [v for v in _D.values()] + [
    "x" + _L["kawi"] + "y " + _D["kawi"] + "7 ok",
    "abc" + _L["garay"] + "def, " + _D["garay"] + "42!",
    " " + _L["tulu_tigalari"] + " " + _L["todhri"] + "  " + _L["sunuwar"] + "\t" + _D["sunuwar"] + "\n",
    "Mass " + _L["cjk_i"] + _L["cjk_h"] + " 3" + _D["outlined"] + "cm.",
    "'s" + _L["ol_onal"] + "'ll" + _D["ol_onal"] + "'d",
    "(" + _L["kirat_rai"] + ")[" + _D["kirat_rai"] + "]{" + _L["gurung_khema"] + _D["gurung_khema"] + "}",
    _L["latin16"] + "A" + _L["latin15"] + "b" + _L["cyr16"] + "\u0416" + _L["cyr_mod"] + " " + _L["arabic15"] + "\u0628",
    "BI-RADS " + _D["myanmar_c"] + "A " + _D["kaktovik"] + "1 " + _D["nag_mundari"] + "x" + _L["nag_mundari"],
    _L["egyptian"] + "..." + _L["egyptian"] + "!!" + _D["garay"] + "\u00a0" + _L["garay"],
    "\U00011b00" + _L["kawi"] + "\U00011b00 head mark",  # U+11B00 is new in 15.0 but Po: stays "other"
    " " + "".join(_L.values()) + " " + "".join(_D.values()) + " ",
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_DECODER = {v: k for k, v in bytes_to_unicode().items()}


def unicode_tables():
    def ranges(pred):
        r, s = [], None
        for c in range(0x110000):
            if pred(c):
                if s is None:
                    s = c
            elif s is not None:
                r.append((s, c - 1))
                s = None
        if s is not None:
            r.append((s, 0x10FFFF))
        return r

    def emit(name, rr):
        out = ["static const uint32_t %s[%d][2] = {" % (name, len(rr))]
        line = "   "
        for a, b in rr:
            item = " {0x%x,0x%x}," % (a, b)
            if len(line) + len(item) > 100:
                out.append(line)
                line = "   "
            line += item
        out.append(line)
        out.append("};")
        return "\n".join(out)

    unicodedata = unicodedata16()
    print("/* Generated by tests/gen_text_fixtures.py --unicode-tables from the PyPI")
    print(" * package unicodedata2 %s (Unicode %s): code point ranges of general" % (REF_UNICODE, unicodedata.unidata_version))
    print(" * category L* (letters) and N* (numbers), sorted, inclusive. */")
    print(emit("mama__uni_letters", ranges(lambda c: unicodedata.category(chr(c))[0] == "L")))
    print(emit("mama__uni_numbers", ranges(lambda c: unicodedata.category(chr(c))[0] == "N")))


def hf_classes(pre):
    """Class of every code point under tokenizers' ByteLevel regex, checked against unicodedata2."""
    ud = unicodedata16()
    runs, bad = {"L": [], "N": [], "S": []}, []
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        if len(pre.pre_tokenize_str("a" + ch)) == 1:
            k = "L"
        elif len(pre.pre_tokenize_str("1" + ch)) == 1:
            k = "N"
        elif len(pre.pre_tokenize_str("!" + ch)) == 1:
            k = "O"
        else:
            k = "S"
        cat = ud.category(ch)[0]
        if (cat if cat in "LN" else "O") != (k if k in "LN" else "O"):
            bad.append(c)
        if k in runs:
            r = runs[k]
            if r and r[-1][1] == c - 1:
                r[-1][1] = c
            else:
                r.append([c, c])
    if bad:
        raise SystemExit("tokenizers and Unicode %s disagree on %d code points, e.g. %s"
                         % (REF_UNICODE, len(bad), " ".join("U+%04X" % c for c in bad[:10])))
    return runs


def write_cases(path, texts, pre, tiny, hf, version):
    lines = ["# generated by tests/gen_text_fixtures.py with tokenizers %s; do not edit" % version,
             "# T text (hex UTF-8) / P pre-tokenizer pieces (hex) / A ids, weights/tiny_vocab / B ids, hf_bpe"]
    for t in texts:
        pieces = [bytes(BYTE_DECODER[c] for c in p).hex() for p, _ in pre.pre_tokenize_str(t)]
        a = tiny.encode(t, add_special_tokens=False).ids
        b = hf.encode(t, add_special_tokens=False).ids
        assert tiny.decode(a, skip_special_tokens=False) == t or "\ufffd" in t, t
        lines.append("T " + t.encode("utf-8").hex())
        lines.append("P " + " ".join(pieces))
        lines.append("A " + " ".join(map(str, a)))
        lines.append("B " + " ".join(map(str, b)))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def with_specials(tok):
    from tokenizers import AddedToken
    base = tok.get_vocab_size(with_added_tokens=False)
    tok.add_special_tokens([AddedToken(EOS, special=True, normalized=False)])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SIX])
    ids = [tok.token_to_id(s) for s in SIX]
    assert ids == list(range(base, base + 6)), (ids, base)
    return tok


def load_bpe(vocab, merges):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return with_specials(tok)


def main():
    if "--unicode-tables" in sys.argv:
        unicode_tables()
        return
    import tokenizers
    from tokenizers import ByteLevelBPETokenizer, pre_tokenizers
    if not tokenizers.__version__.startswith(REF_TOKENIZERS):
        raise SystemExit("the reference is tokenizers %sx (pip install tokenizers==0.23.3), got %s"
                         % (REF_TOKENIZERS, tokenizers.__version__))
    import unicodedata  # Python 3.11's: Unicode 14.0.0
    ud = unicodedata16()
    for want, group in (("L", U16_LETTERS), ("N", U16_DIGITS)):
        for t in group.values():
            for ch in t:  # each must be unassigned in Unicode 14 and a letter / number in 16.0
                assert ud.category(ch)[0] == want, hex(ord(ch))
                assert unicodedata.unidata_version != "14.0.0" or unicodedata.category(ch) == "Cn", hex(ord(ch))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fix = os.path.join(root, "tests", "fixtures", "text")
    hf_dir = os.path.join(fix, "hf_bpe")
    os.makedirs(hf_dir, exist_ok=True)
    exe = os.path.join(root, "build", "test_text")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.check_call([exe, "--emit-corpus", os.path.join(tmp, "corpus.txt")])
        subprocess.check_call([exe, "--emit-captions", os.path.join(tmp, "captions.txt")])
        with open(os.path.join(tmp, "corpus.txt"), encoding="utf-8") as f:
            corpus = f.read().split("\n")[:-1]
        with open(os.path.join(tmp, "captions.txt"), encoding="utf-8") as f:
            captions = f.read().split("\n")[:-1]

    # B: a vocabulary trained by tokenizers itself on the same corpus
    bt = ByteLevelBPETokenizer(add_prefix_space=False)
    bt.train_from_iterator(corpus, vocab_size=1000, min_frequency=2, show_progress=False, special_tokens=[EOS])
    bt.save_model(hf_dir)
    hf = load_bpe(os.path.join(hf_dir, "vocab.json"), os.path.join(hf_dir, "merges.txt"))
    hf.save(os.path.join(hf_dir, "tokenizer.json"), pretty=False)
    with open(os.path.join(hf_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    merges = tj["model"]["merges"]
    if merges and isinstance(merges[0], list):
        tj["model"]["merges"] = [a + " " + b for a, b in merges]
    else:  # older tokenizers wrote strings: make the pair form for the other file
        raise SystemExit("expected [a, b] merges from tokenizers >= 0.20")
    with open(os.path.join(hf_dir, "tokenizer_string_merges.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)

    # A: the shipped tiny vocabulary
    tiny = load_bpe(os.path.join(root, "weights", "tiny_vocab", "vocab.json"),
                    os.path.join(root, "weights", "tiny_vocab", "merges.txt"))
    assert tiny.get_vocab_size() == 2048, tiny.get_vocab_size()

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    texts = captions + AWKWARD
    write_cases(os.path.join(fix, "cases.txt"), texts, pre, tiny, hf, tokenizers.__version__)
    write_cases(os.path.join(fix, "unicode16.txt"), UNICODE16, pre, tiny, hf, tokenizers.__version__)
    runs = hf_classes(pre)
    with open(os.path.join(fix, "hf_classes.txt"), "w", encoding="utf-8") as f:
        f.write("# generated by tests/gen_text_fixtures.py with tokenizers %s (agrees with Unicode %s); do not edit\n"
                % (tokenizers.__version__, ud.unidata_version))
        f.write("# class (L letter, N number, S whitespace) first last (hex, inclusive); other code points: other\n")
        for k in "LNS":
            for a, b in runs[k]:
                f.write("%s %x %x\n" % (k, a, b))
    print("wrote %d + %d cases, hf vocab %d (+%d added)" % (len(texts), len(UNICODE16), hf.get_vocab_size(with_added_tokens=False),
                                                      hf.get_vocab_size() - hf.get_vocab_size(with_added_tokens=False)))


if __name__ == "__main__":
    main()
