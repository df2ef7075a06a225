// The calling OS thread's OpenMP thread count, loaded by cpu_threads.py (see there for why). Linked, like every
// kernel here, against the process's libgomp (torch's), so the count is the one torch's and oneDNN's parallel
// regions read on this thread.
#include <cstdint>
#include <omp.h>

extern "C" {
// Set this thread's OpenMP thread count to `threads` (other threads keep theirs); write the previous count.
void set_thread_count(int64_t threads, int64_t* previous) {
    *previous = omp_get_max_threads();
    omp_set_num_threads(static_cast<int>(threads));
}
}
