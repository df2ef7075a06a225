// Best-first walk over a faiss IndexHNSWSQ (8-bit codes, inner product), loaded by sq8_graph_search.py (see
// there for why, and for how its scores equal faiss's).

#include <cstdint>
#include <cstring>
#include <queue>
#include <utility>
#include <vector>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

inline float dot_u8(const float* w, const uint8_t* c, int d) {
    int i = 0;
    float s = 0.f;
#ifdef __AVX512F__
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 32 <= d; i += 32) {
        const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + i));
        const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + i + 16));
        a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b0)), _mm512_loadu_ps(w + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b1)), _mm512_loadu_ps(w + i + 16), a1);
    }
    s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#endif
    for (; i < d; ++i) s += w[i] * static_cast<float>(c[i]);
    return s;
}

inline void prefetch(const uint8_t* p, int64_t bytes) {
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
}

using Item = std::pair<float, int32_t>;

}  // namespace

extern "C" int64_t sq8_hnsw_search(
    const uint8_t* codes, int64_t code_size, int32_t d,
    const int32_t* neighbors, const uint64_t* offsets, const int32_t* cum_nb,
    int32_t entry_point, int32_t max_level,
    const float* w, int32_t ef, int32_t k, const uint8_t* dead,
    uint16_t* visited, uint16_t tag,
    float* out_scores, int64_t* out_labels) {
    if (entry_point < 0) return 0;
    auto score = [&](int32_t v) { return dot_u8(w, codes + static_cast<int64_t>(v) * code_size, d); };
    int32_t cur = entry_point;
    float cur_s = score(cur);
    for (int32_t level = max_level; level >= 1; --level) {  // greedy descent, as faiss's greedy_update_nearest
        for (bool moved = true; moved;) {
            moved = false;
            const uint64_t begin = offsets[cur] + cum_nb[level], end = offsets[cur] + cum_nb[level + 1];
            for (uint64_t j = begin; j < end; ++j) {
                const int32_t v = neighbors[j];
                if (v < 0) break;
                const float s = score(v);
                if (s > cur_s) { cur_s = s; cur = v; moved = true; }
            }
        }
    }
    std::priority_queue<Item> frontier;                                  // best first
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> best;  // worst of the ef best on top
    // Deleted nodes (dead[v] != 0) still route the walk but never enter the results, as in hnswlib.
    visited[cur] = tag;
    frontier.emplace(cur_s, cur);
    if (dead == nullptr || !dead[cur]) best.emplace(cur_s, cur);
    int32_t fresh[512];
    while (!frontier.empty()) {
        const Item top = frontier.top();
        if (static_cast<int32_t>(best.size()) >= ef && top.first < best.top().first) break;
        frontier.pop();
        const uint64_t begin = offsets[top.second] + cum_nb[0], end = offsets[top.second] + cum_nb[1];
        int n = 0;
        for (uint64_t j = begin; j < end && n < 512; ++j) {  // pass 1: unvisited neighbours, prefetched
            const int32_t v = neighbors[j];
            if (v < 0) break;
            if (visited[v] == tag) continue;
            visited[v] = tag;
            prefetch(codes + static_cast<int64_t>(v) * code_size, code_size);
            fresh[n++] = v;
        }
        for (int i = 0; i < n; ++i) {  // pass 2: score them while later prefetches land
            const float s = score(fresh[i]);
            if (static_cast<int32_t>(best.size()) < ef || s > best.top().first) {
                frontier.emplace(s, fresh[i]);
                if (dead != nullptr && dead[fresh[i]]) continue;
                best.emplace(s, fresh[i]);
                if (static_cast<int32_t>(best.size()) > ef) best.pop();
            }
        }
    }
    while (static_cast<int32_t>(best.size()) > k) best.pop();
    const int64_t found = static_cast<int64_t>(best.size());
    for (int64_t i = found - 1; i >= 0; --i) {  // best last in the min-heap: fill from the back
        out_scores[i] = best.top().first;
        out_labels[i] = best.top().second;
        best.pop();
    }
    return found;
}
