// A minimal parallel-for over contiguous index ranges with std::thread.
// The thread count is a process-wide setting (jacgeom.set_num_threads); ranges are static
// and contiguous so that results never depend on scheduling.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace jacgeom {

inline std::atomic<int>& num_threads_setting() {
    static std::atomic<int> n{static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
    return n;
}

// Calls fn(thread_index, begin, end) on [0, count) split into at most num_threads chunks,
// each of at least min_per_thread items. Exceptions are rethrown on the calling thread.
template <class Fn>
void parallel_for(std::int64_t count, std::int64_t min_per_thread, Fn&& fn) {
    if (count <= 0) return;
    std::int64_t nt = num_threads_setting().load();
    nt = std::max<std::int64_t>(1, std::min<std::int64_t>(nt, count / std::max<std::int64_t>(1, min_per_thread)));
    if (nt <= 1) {
        fn(0, std::int64_t(0), count);
        return;
    }
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(nt - 1));
    std::exception_ptr error;
    std::mutex error_mutex;
    auto run = [&](std::int64_t t) {
        const std::int64_t begin = count * t / nt;
        const std::int64_t end = count * (t + 1) / nt;
        try {
            fn(t, begin, end);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    };
    for (std::int64_t t = 1; t < nt; ++t) threads.emplace_back(run, t);
    run(0);
    for (auto& th : threads) th.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace jacgeom
