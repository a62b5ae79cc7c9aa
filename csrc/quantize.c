/* quantize.c — the two dynamic maps and their encoding grids, and whole-array
 * quantization (see quantize.h for the format). */
#include "quantize.h"
#include <pthread.h>
#include <stdlib.h>

static optimc_qmap maps[2];          /* [0] unsigned, [1] signed */
static pthread_once_t maps_once = PTHREAD_ONCE_INIT;

/* torch.linspace(0.1, 1, n) in float32: a float step, then start + step·i
 * (or end − step·(n−1−i) in the second half) rounded once. */
static float linspace_point(int i, int n)
{
    float start = 0.1f, end = 1.0f, step = (end - start) / (float)(n - 1);
    if (i < n / 2) return (float)((double)start + (double)step * i);
    return (float)((double)end - (double)step * (n - 1 - i));
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The bucket entries of m (m->bucket_bits set), from the midpoints of its
 * codes: each cell's centre takes the nearest code (ties to the lower).
 * Returns 0 if a bucket would hold more than two codes. A bucket's cells
 * are consecutive, and codes ascend with cells. */
static int fill_buckets(optimc_qmap *m, const float *mid)
{
    static unsigned char seen[OPTIMC_QBUCKETS];   /* only used under maps_once */
    memset(seen, 0, sizeof seen);
    memset(m->bucket, 0, sizeof m->bucket);
    uint32_t code = 0;
    for (uint32_t cell = 0; cell < OPTIMC_QGRID; cell++) {
        float centre = (2.0f * (float)cell) / (float)(OPTIMC_QGRID - 1) - 1.0f;
        while (code < 255 && mid[code] < centre) code++;
        uint32_t b = optimc_q8_bucket(m, cell);
        uint32_t *e = &m->bucket[b];
        if (!seen[b]) {                       /* the bucket's first cell: one code so far */
            seen[b] = 1;
            *e = code << 16 | code << 24;
        } else if (code != *e >> 24) {
            if (((*e >> 16) & 0xFFu) != *e >> 24) return 0;   /* a third code */
            *e = cell | (*e & 0x00FF0000u) | code << 24;       /* the edge: where the high code starts */
        }
    }
    return 1;
}

/* bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8):
 * decade i (scale 10^(i−6)) holds the midpoints of linspace(0.1, 1, k + 1),
 * k = 2^i signed (and their negatives) or 2^(i+1) unsigned; then 0 and 1. */
static void build_map(optimc_qmap *m, int is_signed)
{
    static const double decade[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    int k = 0;
    for (int i = 0; i < 7; i++) {
        int points = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
        float scale = (float)decade[i];
        for (int j = 0; j + 1 < points; j++) {
            float mean = (linspace_point(j, points) + linspace_point(j + 1, points)) / 2.0f;
            m->code[k++] = scale * mean;
            if (is_signed) m->code[k++] = -scale * mean;
        }
    }
    m->code[k++] = 0.0f;
    m->code[k++] = 1.0f;
    qsort(m->code, 256, sizeof(float), cmp_float);
    /* the grid's buckets: the fewest index bits for which no bucket holds
     * more than two codes (quantize.h); OPTIMC_QBUCKET_BITS_MAX is enough for
     * both maps, and the tests check every cell */
    float mid[255];
    for (int i = 0; i < 255; i++) mid[i] = (m->code[i] + m->code[i + 1]) * 0.5f;
    for (m->bucket_bits = 4; m->bucket_bits < OPTIMC_QBUCKET_BITS_MAX; m->bucket_bits++)
        if (fill_buckets(m, mid)) return;
    fill_buckets(m, mid);
}

/* The VBMI forms of the map (quantize.h): the byte planes of the values,
 * and the thresholds T_j (the first cell whose code exceeds j, from the
 * bucket table) as a complete search tree. tree_ok only if the descent, done
 * here as the vector code does it, gives the bucket table's code for every
 * one of the 65536 cells. */
static void build_vbmi_forms(optimc_qmap *m)
{
    for (int c = 0; c < 256; c++) {
        uint32_t bits;
        memcpy(&bits, &m->code[c], sizeof bits);
        for (int b = 0; b < 4; b++) m->plane[b][c] = (uint8_t)(bits >> (8 * b));
    }
    uint32_t first[255];
    int j = 0;
    for (uint32_t cell = 0; cell < OPTIMC_QGRID && j < 255; cell++)
        while (j < 255 && optimc_q8_code(m, cell) > (uint32_t)j) first[j++] = cell;
    m->tree_ok = j == 255;   /* every threshold is a cell: the last cell takes code 255 */
    if (!m->tree_ok) return;
    /* node 2^d + p (depth d) holds the threshold of rank (2p + 1)·2^(7−d) − 1,
     * as 65535 − T (quantize.h: optimc_q8_descend32) */
    m->tree[0] = 0;
    for (int d = 0; d < 8; d++)
        for (int p = 0; p < (1 << d); p++)
            m->tree[(1 << d) + p] = (uint16_t)(65535u - first[(2 * p + 1) * (1 << (7 - d)) - 1]);
    for (uint32_t cell = 0; cell < OPTIMC_QGRID; cell++) {
        uint32_t node = 1;
        while (node < 256) node = 2 * node + ((cell + m->tree[node] + 1) >> 16);
        if (node - 256 != optimc_q8_code(m, cell)) m->tree_ok = 0;
    }
}

static void build_maps(void)
{
    build_map(&maps[0], 0);
    build_map(&maps[1], 1);
    build_vbmi_forms(&maps[0]);
    build_vbmi_forms(&maps[1]);
}

const optimc_qmap *optimc_qmap_get(int is_signed)
{
    pthread_once(&maps_once, build_maps);
    return &maps[is_signed ? 1 : 0];
}

void optimc_quantize_blockwise(int is_signed, const float *x, size_t n, uint8_t *codes, float *absmax)
{
    const optimc_qmap *m = optimc_qmap_get(is_signed);
    for (size_t b = 0; b < n; b += OPTIMC_QBLOCK) {
        size_t len = n - b < OPTIMC_QBLOCK ? n - b : OPTIMC_QBLOCK;
        absmax[b / OPTIMC_QBLOCK] = optimc_q8_encode(m, x + b, len, codes + b, 0);
    }
}

void optimc_dequantize_blockwise(int is_signed, const uint8_t *codes, const float *absmax, size_t n, float *x)
{
    const optimc_qmap *m = optimc_qmap_get(is_signed);
    for (size_t b = 0; b < n; b += OPTIMC_QBLOCK) {
        size_t len = n - b < OPTIMC_QBLOCK ? n - b : OPTIMC_QBLOCK;
        optimc_q8_decode(m, codes + b, absmax[b / OPTIMC_QBLOCK], len, x + b, 0);
    }
}

void optimc_bf16_encode_array(const float *x, size_t n, uint16_t *out)
{
    optimc_bf16_encode_block(x, n, out);
}

void optimc_bf16_decode_array(const uint16_t *h, size_t n, float *out)
{
    optimc_bf16_decode_block(h, n, out);
}
