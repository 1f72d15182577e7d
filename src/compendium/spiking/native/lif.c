/* Fused multi-step LIF forward and BPTT backward (see compendium/spiking/neuron.py for the
 * equations). One pass over memory per direction, instead of the two (forward) and six
 * (backward) tensor passes per time step of the eager kernel.
 *
 * The arithmetic is that of the eager kernel, operation by operation, so the results are the
 * same bit for bit: PyTorch's CPU kernels compute `add(a, b, alpha=c)` as fma(b, c, a) and
 * `addcmul(a, b, c, value=v)` as fma(v * b, c, a); this file is compiled with
 * -ffp-contract=off, so only the fmaf calls written here fuse. It is also compiled with
 * -fno-trapping-math, without which GCC keeps the selects below (the surrogate window, the
 * spike, the gradient flags) as branches and leaves the loops scalar on CPUs without AVX-512
 * masks; the arithmetic is the same (see native/__init__.py).
 *
 * Layout: every [T, ...] array holds its T time slices as contiguous blocks of n floats with
 * the same element order (the caller checks); an input may repeat one slice for all steps
 * (time stride 0). Elements are independent, so the element range is split over threads and,
 * inside a thread, walked in blocks small enough for the T slices of a block to stay in L1.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 512
#define MAX_THREADS 64

typedef struct {
    const float *cur; int64_t s_cur;                /* input current, time stride */
    float *mem, *spk;                               /* outputs [T, n] (backward: the saved membranes) */
    const float *gs; int64_t s_gs;                  /* grad of spikes (or NULL), time stride */
    const float *gm; int64_t s_gm;                  /* grad of membranes (or NULL), time stride */
    const float *h;                                 /* surrogate derivative [T, n] (or NULL: rectangular) */
    float *gcur;                                    /* grad of the current [T, n] */
    int64_t n, lo, hi;
    int T, reset, detach;
    float k, th, half_w, inv_w, neg_k, neg_c;
    /* the constant-current rate kernels (lif_static_rate_*) */
    const int16_t *bits; int thr; float scale;      /* keep mask: bits[t*n+i] >= thr (NULL: keep all), scale */
    const float *gout; float *out;                  /* grad of the rate [n] / the rate [n] */
    float *scratch; int64_t scratch_per;            /* per-thread scratch (backward: 2 T RATE_BLOCK floats) */
    /* the LIF + 2x2 max-pool kernels (lif_pool_*): n counts output rows, n_in/n_out the floats of a slice */
    float *pool; const float *gp; int64_t s_gp;     /* pooled spikes [T, n_out] / their grad, time stride */
    int64_t n_in, n_out, H, W, cs;                  /* slice [N, C, H, W]: H rows of W cs floats per plane */
    int64_t unit;                                   /* floats per unit of work (0: n counts floats) */
} job_t;

/* One LIF step of one element, with the eager kernel's operations (reset is a compile-time
 * constant at every call): the membrane from the previous one and the current, and its spike. */
static inline __attribute__((always_inline)) float lif_next(const int reset, float up, float op, float I, float k,
                                                            float neg_th) {
    if (reset == 0) return fmaf(k * up, 1.0f - op, I);    /* addcmul(I, u_prev, keep_prev, value=k) */
    if (reset == 1) return fmaf(op, neg_th, fmaf(up, k, I));  /* add(I, u_prev, alpha=k); sub_(o_prev, alpha=th) */
    return fmaf(fmaf(op, neg_th, up), k, I);              /* add(u_prev, o_prev, alpha=-th); add(I, ., alpha=k) */
}

static inline __attribute__((always_inline)) float lif_spike(const int reset, float u, float th) {
    return reset == 0 ? (u <= th ? 0.0f : 1.0f) : (u > th ? 1.0f : 0.0f);
}

static void fwd_range(const job_t *a) {
    const int T = a->T;
    const float k = a->k, th = a->th, neg_th = -a->th;
    for (int64_t b = a->lo; b < a->hi; b += BLOCK) {
        const int64_t e = b + BLOCK < a->hi ? b + BLOCK : a->hi;
        for (int64_t i = b; i < e; i++) {
            float u = a->cur[i];
            a->mem[i] = u;
            a->spk[i] = lif_spike(a->reset, u, th);
        }
        for (int t = 1; t < T; t++) {
            const float *I = a->cur + t * a->s_cur;
            const float *up = a->mem + (int64_t)(t - 1) * a->n, *op = a->spk + (int64_t)(t - 1) * a->n;
            float *u = a->mem + (int64_t)t * a->n, *o = a->spk + (int64_t)t * a->n;
#define FWD_STEP(R) for (int64_t i = b; i < e; i++) { float v = lif_next(R, up[i], op[i], I[i], k, neg_th); \
                                                        u[i] = v; o[i] = lif_spike(R, v, th); }
            if (a->reset == 0) { FWD_STEP(0) } else if (a->reset == 1) { FWD_STEP(1) } else { FWD_STEP(2) }
#undef FWD_STEP
        }
    }
}

/* The BPTT step of one element: δ[t] from the spike gradient go (and gm, h where given), the
 * membrane u[t] and δ[t+1] = dn. The flags are compile-time constants at every call. */
static inline __attribute__((always_inline)) float bptt_elem(
        const int reset, const int has_dn, const int reset_path, const int has_gs, const int has_gm, const int has_h,
        float go, float gm, float h, float u, float dn, float k, float th, float half_w, float inv_w, float neg_k,
        float neg_c) {
    float x = 0.0f;
    if (has_gs || reset_path) {
        if (!has_gs) go = 0.0f;
        if (reset_path) go = reset == 0 ? fmaf(neg_k * dn, u, go) : fmaf(dn, neg_c, go);
        float s = has_h ? h : (fabsf(u - th) < half_w ? 1.0f : 0.0f) * inv_w;  /* exact for inv_w = 1 */
        x = s * go;
    }
    if (has_gm) x = x + gm;
    /* the hard reset's o[t] is recomputed from u[t], exactly as the forward pass made it (one
     * [T, n] array fewer to read; the other resets do not need o[t]) */
    if (has_dn) x = reset == 0 ? fmaf(k * dn, 1.0f - lif_spike(0, u, th), x) : fmaf(dn, k, x);
    return x;
}

/* One block of one backward step; the flags are compile-time constants at every call below, so
 * that each combination is its own branch-free, vectorised loop. */
static inline __attribute__((always_inline)) void bwd_block(
        const int reset, const int has_dn, const int reset_path, const int has_gs, const int has_gm, const int has_h,
        int64_t len, const float *u, const float *gs, const float *gm, const float *h,
        const float *dn, float *d, float k, float th, float half_w, float inv_w, float neg_k, float neg_c) {
    for (int64_t i = 0; i < len; i++)
        d[i] = bptt_elem(reset, has_dn, reset_path, has_gs, has_gm, has_h, has_gs ? gs[i] : 0.0f,
                         has_gm ? gm[i] : 0.0f, has_h ? h[i] : 0.0f, u[i], has_dn ? dn[i] : 0.0f, k, th, half_w,
                         inv_w, neg_k, neg_c);
}

#define BWD(R, DN, RP, GS, GM, H) bwd_block(R, DN, RP, GS, GM, H, len, u, gs, gm, h, dn, d, k, th, half_w, inv_w, neg_k, neg_c)
#define BWD_H(R, DN, RP, GS, GM) if (h) BWD(R, DN, RP, GS, GM, 1); else BWD(R, DN, RP, GS, GM, 0)
#define BWD_GM(R, DN, RP, GS) if (gm) { BWD_H(R, DN, RP, GS, 1); } else { BWD_H(R, DN, RP, GS, 0); }
#define BWD_GS(R, DN, RP) if (gs) { BWD_GM(R, DN, RP, 1) } else { BWD_GM(R, DN, RP, 0) }
#define BWD_PATH(R) if (!dn) { BWD_GS(R, 0, 0) } else if (a->detach) { BWD_GS(R, 1, 0) } else { BWD_GS(R, 1, 1) }

static void bwd_range(const job_t *a) {
    const int T = a->T;
    const int64_t n = a->n;
    const float k = a->k, th = a->th, half_w = a->half_w, inv_w = a->inv_w, neg_k = a->neg_k, neg_c = a->neg_c;
    for (int64_t b = a->lo; b < a->hi; b += BLOCK) {
        const int64_t len = (b + BLOCK < a->hi ? b + BLOCK : a->hi) - b;
        for (int t = T - 1; t >= 0; t--) {
            const float *u = a->mem + (int64_t)t * n + b;
            const float *gs = a->gs ? a->gs + t * a->s_gs + b : NULL;
            const float *gm = a->gm ? a->gm + t * a->s_gm + b : NULL;
            const float *h = a->h ? a->h + (int64_t)t * n + b : NULL;
            const float *dn = t < T - 1 ? a->gcur + (int64_t)(t + 1) * n + b : NULL;
            float *d = a->gcur + (int64_t)t * n + b;
            if (a->reset == 0) { BWD_PATH(0) } else if (a->reset == 1) { BWD_PATH(1) } else { BWD_PATH(2) }
        }
    }
}

/* ---- A LIF under a constant current, read out as its (dropped-out) rate ----------------------
 * r[i] = (Σ_t o_t[i] · m_t[i]) / T, with u_t driven by the same current cur[i] at every step and
 * m_t[i] = scale if bits[t n + i] >= thr else 0 (m ≡ 1 without bits); the sum runs t = 0 … T-1.
 * The backward pass recomputes u_t and o_t (T cheap steps per element) instead of reading saved
 * [T, n] arrays, applies the BPTT of bwd_block with g_o[t] = (g_r / T) · m_t, and sums the
 * gradient of the current over the steps from t = T-1 down to 0. Python's eager twin
 * (compendium.spiking.neuron._StaticLIFRate) does the same operations in the same order. */
#define RATE_BLOCK 256

/* One step of a block: u ← next(u, o, I), o ← H(u), acc ← acc + o·m (t > 0) or o·m (t = 0). The
 * flags are compile-time constants at every call (see the dispatch below), so that each
 * combination is its own branch-free, vectorised loop. */
static inline __attribute__((always_inline)) void rate_fwd_step(
        const int reset, const int first, const int has_bits, int64_t len, const float *restrict I,
        const int16_t *restrict bits, int thr, float scale, float *restrict u, float *restrict o,
        float *restrict acc, float k, float th, float neg_th) {
    for (int64_t i = 0; i < len; i++) {
        float v = first ? I[i] : lif_next(reset, u[i], o[i], I[i], k, neg_th);
        float s = lif_spike(reset, v, th);
        float m = has_bits ? (bits[i] >= thr ? scale : 0.0f) : 1.0f;
        u[i] = v;
        o[i] = s;
        acc[i] = first ? s * m : acc[i] + s * m;
    }
}

#define RFWD(R, F, B) rate_fwd_step(R, F, B, len, I, bits, a->thr, a->scale, u, o, acc, k, th, neg_th)
#define RFWD_B(R, F) if (bits) { RFWD(R, F, 1); } else { RFWD(R, F, 0); }
#define RFWD_F(R) if (t == 0) { RFWD_B(R, 1) } else { RFWD_B(R, 0) }

static void rate_fwd_range(const job_t *a) {
    const int T = a->T;
    const float k = a->k, th = a->th, neg_th = -a->th, fT = (float)a->T;
    float u[RATE_BLOCK], o[RATE_BLOCK], acc[RATE_BLOCK];
    for (int64_t b = a->lo; b < a->hi; b += RATE_BLOCK) {
        const int64_t len = (b + RATE_BLOCK < a->hi ? b + RATE_BLOCK : a->hi) - b;
        const float *I = a->cur + b;
        for (int t = 0; t < T; t++) {
            const int16_t *bits = a->bits ? a->bits + (int64_t)t * a->n + b : NULL;
            if (a->reset == 0) { RFWD_F(0) } else if (a->reset == 1) { RFWD_F(1) } else { RFWD_F(2) }
        }
        for (int64_t i = 0; i < len; i++) a->out[b + i] = acc[i] / fT;
    }
}

/* One backward step of a block: bwd_block's arithmetic with g_o = (g_r / T)·m, δ[t] written over
 * δ[t+1] in dn, and the current's gradient accumulated: acc ← δ[t] at t = T-1, acc + δ[t] below. */
static inline __attribute__((always_inline)) void rate_bwd_step(
        const int reset, const int has_dn, const int reset_path, const int has_bits, int64_t len,
        const float *u, const float *gd, const int16_t *bits, int thr, float scale, float *dn,
        float *acc, float k, float th, float half_w, float inv_w, float neg_k, float neg_c) {
    float gs[RATE_BLOCK];
    for (int64_t i = 0; i < len; i++) gs[i] = gd[i] * (has_bits ? (bits[i] >= thr ? scale : 0.0f) : 1.0f);
    bwd_block(reset, has_dn, reset_path, 1, 0, 0, len, u, gs, NULL, NULL, dn, dn, k, th, half_w, inv_w, neg_k,
              neg_c);
    for (int64_t i = 0; i < len; i++) acc[i] = has_dn ? acc[i] + dn[i] : dn[i];
}

#define RBWD(R, DN, RP, B) rate_bwd_step(R, DN, RP, B, len, uu, gd, bits, a->thr, a->scale, dn, acc, k, th, \
                                         half_w, inv_w, neg_k, neg_c)
#define RBWD_B(R, DN, RP) if (bits) { RBWD(R, DN, RP, 1); } else { RBWD(R, DN, RP, 0); }
#define RBWD_P(R) if (t == T - 1) { RBWD_B(R, 0, 0) } else if (a->detach) { RBWD_B(R, 1, 0) } else { RBWD_B(R, 1, 1) }

/* the forward step without a mask, into the block's u_t, o_t (the sum goes to scratch, unused) */
#define RREC(R) if (t == 0) { rate_fwd_step(R, 1, 0, len, I, NULL, 0, 1.0f, u, o, scratch, k, th, neg_th); } \
                else { rate_fwd_step(R, 0, 0, len, I, NULL, 0, 1.0f, u, o, scratch, k, th, neg_th); }

static void rate_bwd_range(const job_t *a) {
    const int T = a->T;
    const float k = a->k, th = a->th, neg_th = -a->th, fT = (float)a->T, half_w = a->half_w, inv_w = a->inv_w;
    const float neg_k = a->neg_k, neg_c = a->neg_c;
    float *U = a->scratch, *O = a->scratch + (int64_t)T * RATE_BLOCK;  /* this thread's u_t, o_t of a block */
    float gd[RATE_BLOCK], dn[RATE_BLOCK], acc[RATE_BLOCK], scratch[RATE_BLOCK];
    for (int64_t b = a->lo; b < a->hi; b += RATE_BLOCK) {
        const int64_t len = (b + RATE_BLOCK < a->hi ? b + RATE_BLOCK : a->hi) - b;
        const float *I = a->cur + b;
        for (int t = 0; t < T; t++) {  /* recompute the forward pass: u_t, o_t of the block */
            float *u = U + (int64_t)t * RATE_BLOCK, *o = O + (int64_t)t * RATE_BLOCK;
            if (t > 0) {
                memcpy(u, u - RATE_BLOCK, sizeof(float) * (size_t)len);
                memcpy(o, o - RATE_BLOCK, sizeof(float) * (size_t)len);
            }
            if (a->reset == 0) { RREC(0) } else if (a->reset == 1) { RREC(1) } else { RREC(2) }
        }
        for (int64_t i = 0; i < len; i++) gd[i] = a->gout[b + i] / fT;
        for (int t = T - 1; t >= 0; t--) {
            const float *uu = U + (int64_t)t * RATE_BLOCK;
            const int16_t *bits = a->bits ? a->bits + (int64_t)t * a->n + b : NULL;
            if (a->reset == 0) { RBWD_P(0) } else if (a->reset == 1) { RBWD_P(1) } else { RBWD_P(2) }
        }
        for (int64_t i = 0; i < len; i++) a->gcur[b + i] = acc[i];
    }
}

/* ---- A LIF layer followed by 2x2 max pooling of stride 2 ----------------------------------
 * One time slice [N, C, H, W] (H, W even) is dense channels-last (NHWC; cs = C): a plane (one
 * image) holds H rows of W·cs floats, element (h, w, c) at (h W + w) cs + c, and the pooled
 * slice [N, C, H/2, W/2] has the same layout. (The loops vectorise over the channels; for an
 * NCHW slice, where a window's lanes are 1 float apart, the unfused layers are faster.) A unit of work is
 * one pooled row: input rows 2 h2 and 2 h2 + 1 of one plane, for all T steps. The forward pass
 * writes the membranes and the pooled spikes; the [T, n] spikes are never stored (o[t-1] is
 * recomputed from u[t-1] as the forward step made it). max_pool2d's backward routes a pooled
 * gradient to the first maximum of the window in scan order (00, 01, 10, 11); for binary spikes
 * that is the first element that fired, or element 00 when none did, and every other element
 * receives exactly 0, so the backward pass here recomputes the spikes from u[t] and feeds
 * bptt_elem the spike gradient the unfused layers would have: the same numbers bit for bit. */
static inline __attribute__((always_inline)) void pool_fwd_unit(const int reset, const job_t *a, int64_t j) {
    const int64_t H2 = a->H / 2, W2 = a->W / 2, cs = a->cs, len = a->W * cs;
    const int64_t o = j / H2, h2 = j % H2;
    const int64_t r0 = o * a->H * len + 2 * h2 * len, q0 = o * H2 * W2 * cs + h2 * W2 * cs;
    const float k = a->k, th = a->th, neg_th = -a->th;
    for (int t = 0; t < a->T; t++) {
        const float *I = a->cur + t * a->s_cur + r0;
        float *u = a->mem + (int64_t)t * a->n_in + r0;
        if (t == 0) {
            for (int64_t i = 0; i < 2 * len; i++) u[i] = I[i];
        } else {
            const float *up = u - a->n_in;
            for (int64_t i = 0; i < 2 * len; i++) u[i] = lif_next(reset, up[i], lif_spike(reset, up[i], th), I[i], k, neg_th);
        }
        float *p = a->pool + (int64_t)t * a->n_out + q0;
        for (int64_t w2 = 0; w2 < W2; w2++) {
            const float *u0 = u + 2 * w2 * cs, *u1 = u0 + len;
            float *pw = p + w2 * cs;
            for (int64_t c = 0; c < cs; c++) {
                float s = lif_spike(reset, u0[c], th) + lif_spike(reset, u0[c + cs], th)
                        + lif_spike(reset, u1[c], th) + lif_spike(reset, u1[c + cs], th);
                pw[c] = s > 0.0f ? 1.0f : 0.0f;
            }
        }
    }
}

static void pool_fwd_range(const job_t *a) {
    for (int64_t j = a->lo; j < a->hi; j++) {
        if (a->reset == 0) pool_fwd_unit(0, a, j); else if (a->reset == 1) pool_fwd_unit(1, a, j); else pool_fwd_unit(2, a, j);
    }
}

/* The four elements of one window at step t: routed spike gradients, then bptt_elem. Element
 * (r, s) of the window is read at u_rs[I] and written at d_rs[I] (δ[t+1] at e_rs[I]); the
 * pooled gradient at gp[I], read as 0 + gp[I] as max_pool2d's backward adds it to a zero-filled
 * gradient (so -0 arrives as +0). */
#define POOL_BWD_WINDOW(R, DN, RP, I)                                                                    \
    {                                                                                                    \
        const float v00 = u00[I], v01 = u01[I], v10 = u10[I], v11 = u11[I], g = 0.0f + gp[I];            \
        const float s00 = lif_spike(R, v00, th), s01 = lif_spike(R, v01, th), s10 = lif_spike(R, v10, th); \
        const float s11 = lif_spike(R, v11, th);                                                         \
        const float n00 = 1.0f - s00, n01 = n00 * (1.0f - s01), n10 = n01 * (1.0f - s10);                \
        const float g00 = (s00 + n10 * (1.0f - s11)) > 0.0f ? g : 0.0f;  /* fired first, or none fired */ \
        const float g01 = n00 * s01 > 0.0f ? g : 0.0f, g10 = n01 * s10 > 0.0f ? g : 0.0f;                \
        const float g11 = n10 * s11 > 0.0f ? g : 0.0f;                                                   \
        d00[I] = bptt_elem(R, DN, RP, 1, 0, 0, g00, 0.0f, 0.0f, v00, DN ? e00[I] : 0.0f, k, th, half_w, inv_w, neg_k, neg_c); \
        d01[I] = bptt_elem(R, DN, RP, 1, 0, 0, g01, 0.0f, 0.0f, v01, DN ? e01[I] : 0.0f, k, th, half_w, inv_w, neg_k, neg_c); \
        d10[I] = bptt_elem(R, DN, RP, 1, 0, 0, g10, 0.0f, 0.0f, v10, DN ? e10[I] : 0.0f, k, th, half_w, inv_w, neg_k, neg_c); \
        d11[I] = bptt_elem(R, DN, RP, 1, 0, 0, g11, 0.0f, 0.0f, v11, DN ? e11[I] : 0.0f, k, th, half_w, inv_w, neg_k, neg_c); \
    }

/* m windows side by side (the channels of one window position); the pointers are restrict-
 * qualified (the four lanes never overlap within the loop), which lets the compiler vectorise it */
static inline __attribute__((always_inline)) void pool_bwd_lanes(
        const int R, const int DN, const int RP, int64_t m, const float *restrict u00, const float *restrict u01,
        const float *restrict u10, const float *restrict u11, const float *restrict e00, const float *restrict e01,
        const float *restrict e10, const float *restrict e11, const float *restrict gp, float *restrict d00,
        float *restrict d01, float *restrict d10, float *restrict d11, float k, float th, float half_w, float inv_w,
        float neg_k, float neg_c) {
    for (int64_t c = 0; c < m; c++) POOL_BWD_WINDOW(R, DN, RP, c)
}

static inline __attribute__((always_inline)) void pool_bwd_step(const int reset, const int has_dn, const int reset_path,
                                                                 const job_t *a, int t, int64_t r0, int64_t q0) {
    const int64_t W2 = a->W / 2, cs = a->cs, len = a->W * cs;
    const float k = a->k, th = a->th, half_w = a->half_w, inv_w = a->inv_w, neg_k = a->neg_k, neg_c = a->neg_c;
    const float *u = a->mem + (int64_t)t * a->n_in + r0;
    float *d = a->gcur + (int64_t)t * a->n_in + r0;
    const float *e = has_dn ? d + a->n_in : NULL;  /* δ[t+1] */
    const float *gp = a->gp + t * a->s_gp + q0;
    for (int64_t w2 = 0; w2 < W2; w2++) {  /* the channels of one window position are contiguous */
        const float *u0 = u + 2 * w2 * cs, *u1 = u0 + len;
        float *d0 = d + 2 * w2 * cs, *d1 = d0 + len;
        const float *e0 = has_dn ? e + 2 * w2 * cs : u0, *e1 = has_dn ? e0 + len : u1;  /* unread without δ[t+1] */
        pool_bwd_lanes(reset, has_dn, reset_path, cs, u0, u0 + cs, u1, u1 + cs, e0, e0 + cs, e1, e1 + cs,
                       gp + w2 * cs, d0, d0 + cs, d1, d1 + cs, k, th, half_w, inv_w, neg_k, neg_c);
    }
}

#define PBWD_P(R) if (t == a->T - 1) { pool_bwd_step(R, 0, 0, a, t, r0, q0); } \
                  else if (a->detach) { pool_bwd_step(R, 1, 0, a, t, r0, q0); } else { pool_bwd_step(R, 1, 1, a, t, r0, q0); }

static void pool_bwd_range(const job_t *a) {
    const int64_t H2 = a->H / 2, W2 = a->W / 2, cs = a->cs, len = a->W * cs;
    for (int64_t j = a->lo; j < a->hi; j++) {
        const int64_t o = j / H2, h2 = j % H2;
        const int64_t r0 = o * a->H * len + 2 * h2 * len, q0 = o * H2 * W2 * cs + h2 * W2 * cs;
        for (int t = a->T - 1; t >= 0; t--) {
            if (a->reset == 0) { PBWD_P(0) } else if (a->reset == 1) { PBWD_P(1) } else { PBWD_P(2) }
        }
    }
}

static void *fwd_thread(void *p) { fwd_range((const job_t *)p); return NULL; }
static void *bwd_thread(void *p) { bwd_range((const job_t *)p); return NULL; }
static void *rate_fwd_thread(void *p) { rate_fwd_range((const job_t *)p); return NULL; }
static void *rate_bwd_thread(void *p) { rate_bwd_range((const job_t *)p); return NULL; }
static void *pool_fwd_thread(void *p) { pool_fwd_range((const job_t *)p); return NULL; }
static void *pool_bwd_thread(void *p) { pool_bwd_range((const job_t *)p); return NULL; }

/* Threads for an element-wise loop over n items: at most the threads asked for, and at least
 * `per` items for each (fewer items run on fewer threads, down to one). */
static int elementwise_threads(int64_t n, int threads, int64_t per) {
    if (threads < 1) threads = 1;
    if (n < (int64_t)threads * per) threads = (int)(n / per) > 1 ? (int)(n / per) : 1;
    return threads;
}

static void run(job_t *base, int threads, void *(*fn)(void *)) {
    int64_t n = base->n, unit = base->unit > 0 ? base->unit : 1, work = n * unit;
    const int64_t align = unit > 1 ? 1 : 64;  /* chunks of whole cache lines of floats */
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    threads = elementwise_threads(work, threads, 16384);
    if (threads > n) threads = n > 1 ? (int)n : 1;
#ifdef _OPENMP
    /* PyTorch's own OpenMP runtime (libgomp.so.1 is already loaded by torch, so this library binds
     * to it): its worker threads are the ones ATen just used, hot and not competing with ours */
    int64_t chunk_ = ((n + threads - 1) / threads + align - 1) / align * align;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int j = 0; j < threads; j++) {
        job_t job = *base;
        job.lo = (int64_t)j * chunk_ < n ? (int64_t)j * chunk_ : n;
        job.hi = (int64_t)(j + 1) * chunk_ < n ? (int64_t)(j + 1) * chunk_ : n;
        if (base->scratch) job.scratch = base->scratch + j * base->scratch_per;
        if (job.lo < job.hi) fn(&job);
    }
    return;
#endif
    job_t jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS];
    int64_t chunk = ((n + threads - 1) / threads + align - 1) / align * align;
    for (int j = 0; j < threads; j++) {
        jobs[j] = *base;
        jobs[j].lo = (int64_t)j * chunk < n ? (int64_t)j * chunk : n;
        jobs[j].hi = (int64_t)(j + 1) * chunk < n ? (int64_t)(j + 1) * chunk : n;
        if (base->scratch) jobs[j].scratch = base->scratch + j * base->scratch_per;
        started[j] = 0;
    }
    for (int j = 1; j < threads; j++) {
        if (jobs[j].lo >= jobs[j].hi) continue;
        if (pthread_create(&tid[j], NULL, fn, &jobs[j]) == 0) started[j] = 1;
        else fn(&jobs[j]);  /* no thread to be had: do the chunk here */
    }
    fn(&jobs[0]);
    for (int j = 1; j < threads; j++)
        if (started[j]) pthread_join(tid[j], NULL);
}

int lif_forward(const float *cur, int64_t s_cur, float *mem, float *spk, int64_t n, int T, float k, float th,
                int reset, int threads) {
    job_t a;
    memset(&a, 0, sizeof a);
    a.cur = cur; a.s_cur = s_cur; a.mem = mem; a.spk = spk; a.n = n; a.T = T; a.k = k; a.th = th; a.reset = reset;
    run(&a, threads, fwd_thread);
    return 0;
}

int lif_backward(float *mem, const float *gs, int64_t s_gs, const float *gm, int64_t s_gm,
                 const float *h, float *gcur, int64_t n, int T, float k, float th, int reset, int detach,
                 float half_w, float inv_w, float neg_k, float neg_c, int threads) {
    job_t a;
    memset(&a, 0, sizeof a);
    a.mem = mem; a.gs = gs; a.s_gs = s_gs; a.gm = gm; a.s_gm = s_gm; a.h = h; a.gcur = gcur;
    a.n = n; a.T = T; a.k = k; a.th = th; a.reset = reset; a.detach = detach; a.half_w = half_w; a.inv_w = inv_w;
    a.neg_k = neg_k; a.neg_c = neg_c;
    run(&a, threads, bwd_thread);
    return 0;
}

int lif_static_rate_forward(const float *cur, const int16_t *bits, int thr, float scale, float *out, int64_t n, int T,
                            float k, float th, int reset, int threads) {
    job_t a;
    memset(&a, 0, sizeof a);
    a.cur = cur; a.bits = bits; a.thr = thr; a.scale = scale; a.out = out; a.n = n; a.T = T; a.k = k; a.th = th;
    a.reset = reset;
    run(&a, threads, rate_fwd_thread);
    return 0;
}

/* scratch: 2 T RATE_BLOCK floats for each of `threads` threads (rate_scratch_floats) */
int64_t rate_scratch_floats(int T, int threads) { return (int64_t)2 * T * RATE_BLOCK * (threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads); }

int lif_static_rate_backward(const float *cur, const int16_t *bits, int thr, float scale, const float *gout,
                             float *gcur, int64_t n, int T, float k, float th, int reset, int detach, float half_w,
                             float inv_w, float neg_k, float neg_c, float *scratch, int threads) {
    job_t a;
    memset(&a, 0, sizeof a);
    a.scratch = scratch; a.scratch_per = (int64_t)2 * T * RATE_BLOCK;
    a.cur = cur; a.bits = bits; a.thr = thr; a.scale = scale; a.gout = gout; a.gcur = gcur; a.n = n; a.T = T;
    a.k = k; a.th = th; a.reset = reset; a.detach = detach; a.half_w = half_w; a.inv_w = inv_w; a.neg_k = neg_k;
    a.neg_c = neg_c;
    run(&a, threads, rate_bwd_thread);
    return 0;
}

/* cur/mem [T, n_in] (cur's time stride s_cur, 0: one slice for all steps), pool [T, n_in / 4];
 * a slice is planes × H rows of W cs floats (see pool_fwd_unit) */
int lif_pool_forward(const float *cur, int64_t s_cur, float *mem, float *pool, int64_t planes, int64_t H, int64_t W,
                     int64_t cs, int T, float k, float th, int reset, int threads) {
    job_t a;
    memset(&a, 0, sizeof a);
    a.cur = cur; a.s_cur = s_cur; a.mem = mem; a.pool = pool; a.T = T; a.k = k; a.th = th; a.reset = reset;
    a.H = H; a.W = W; a.cs = cs; a.n_in = planes * H * W * cs; a.n_out = a.n_in / 4;
    a.n = planes * (H / 2); a.unit = 2 * W * cs;  /* floats of one slice per unit */
    run(&a, threads, pool_fwd_thread);
    return 0;
}

/* gp: the pooled spikes' gradient [T, n_in / 4] (time stride s_gp); gcur [T, n_in] */
int lif_pool_backward(const float *mem, const float *gp, int64_t s_gp, float *gcur, int64_t planes, int64_t H,
                      int64_t W, int64_t cs, int T, float k, float th, int reset, int detach, float half_w,
                      float inv_w, float neg_k, float neg_c, int threads) {
    job_t a;
    memset(&a, 0, sizeof a);
    a.mem = (float *)mem; a.gp = gp; a.s_gp = s_gp; a.gcur = gcur; a.T = T; a.k = k; a.th = th; a.reset = reset;
    a.detach = detach; a.half_w = half_w; a.inv_w = inv_w; a.neg_k = neg_k; a.neg_c = neg_c;
    a.H = H; a.W = W; a.cs = cs; a.n_in = planes * H * W * cs; a.n_out = a.n_in / 4;
    a.n = planes * (H / 2); a.unit = 2 * W * cs;  /* floats of one slice per unit */
    run(&a, threads, pool_bwd_thread);
    return 0;
}

/* Counter-based random 64-bit words: word i is the SplitMix64 output (Steele, Lea & Flood,
 * OOPSLA 2014) of the state key + (i + 1) * 0x9E3779B97F4A7C15, so each word is computed on its
 * own and the fill splits across threads without changing a bit. compendium.spiking.native
 * .random_words computes the same words with tensor operations where this library is absent. */
static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int random_words(uint64_t *out, int64_t m, uint64_t key, int threads) {
    threads = elementwise_threads(m, threads, 65536);
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t i = 0; i < m; i++) out[i] = splitmix64(key + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL);
    return 0;
}

/* The Hebbian trace update of the hybrid-plasticity synapse (compendium/plasticity/hybrid.py,
 * PlasticLIF): out = clamp(k * p + h / B, -c, c), with the eager code's operations in its order
 * (mul by k, div by B, add, clamp; no fused multiply-add), so the numbers are the same bit for
 * bit. One pass instead of four [in, out] tensor passes; keep[i] records whether k p + h / B
 * lies in [-c, c], where the clamp passes the gradient (PyTorch's clamp backward). */
int trace_update_forward(const float *p, const float *h, float *out, uint8_t *keep, int64_t n, float k, float B,
                         float c, int threads) {
    const float lo = -c, hi = c;
    threads = elementwise_threads(n, threads, 16384);
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t i = 0; i < n; i++) {
        const float q = k * p[i] + h[i] / B;
        const float r = q < lo ? lo : q;
        out[i] = r > hi ? hi : r;  /* a NaN passes through, as in torch.clamp */
        keep[i] = (uint8_t)((q >= lo) & (q <= hi));  /* bitwise: no branch, so the loop vectorises */
    }
    return 0;
}

/* Its gradient: with dq = keep ? g : 0, gp = dq * k and gh = dq / B (either may be NULL: not
 * asked for), the operations of PyTorch's clamp, mul and div backward. */
int trace_update_backward(const float *g, const uint8_t *keep, float *gp, float *gh, int64_t n, float k, float B,
                          int threads) {
    threads = elementwise_threads(n, threads, 16384);
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t i = 0; i < n; i++) {
        const float dq = keep[i] ? g[i] : 0.0f;
        if (gp) gp[i] = dq * k;
        if (gh) gh[i] = dq / B;
    }
    return 0;
}
