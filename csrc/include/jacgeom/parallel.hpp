// A minimal parallel-for over contiguous index ranges on a pool of persistent threads.
// The thread count is a process-wide setting (jacgeom.set_num_threads); ranges are static
// and contiguous so that results never depend on scheduling.
//
// Why a pool: on a virtual machine a thread started for each region can wait milliseconds
// for the scheduler to run it on an idle virtual CPU, and a dense tanh chain runs one region
// per layer (33 for gelu at L = 16). Workers that persist are woken where they last ran.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define JACGEOM_HAS_GETPID 1
#endif

namespace jacgeom {

inline std::atomic<int>& num_threads_setting() {
    static std::atomic<int> n{static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
    return n;
}

namespace detail {

// True on a thread while it runs part of a region (the caller or a worker): a parallel_for
// nested inside one runs serially there, so a region never waits on the pool it occupies.
inline bool& inside_region() {
    static thread_local bool inside = false;
    return inside;
}

// Workers 1..size() wait for a region; the caller takes part 0. One caller at a time holds
// `busy` for a whole region; another caller that finds it held starts its own threads.
class Pool {
public:
    using Task = void (*)(void*, std::int64_t);
    static constexpr int FINISH_SPINS = 1000;  // yields, about 1 ms at most

    // The process's pool, made again in a child after fork (its workers did not survive
    // the fork, and its mutexes may be held by threads that no longer exist). Pools are
    // never destroyed: detached workers wait on their members until the process ends.
    static Pool& instance() {
        static std::atomic<Pool*> pool{nullptr};
        Pool* p = pool.load(std::memory_order_acquire);
        if (p == nullptr || !p->owned_by_this_process()) {
            static std::mutex make;
            std::lock_guard<std::mutex> lock(make);
            p = pool.load(std::memory_order_acquire);
            if (p == nullptr || !p->owned_by_this_process()) {
                p = new Pool();  // the one before, if any, belongs to the parent: left as it is
                pool.store(p, std::memory_order_release);
            }
        }
        return *p;
    }

    std::mutex busy;

    // Runs task(ctx, t) for t in [1, nt) on workers and waits for them; requires `busy`.
    // The caller runs its own part between start() and finish().
    void start(std::int64_t nt, Task task, void* ctx) {
        grow(nt - 1);
        {
            std::lock_guard<std::mutex> lock(m_);
            task_ = task;
            ctx_ = ctx;
            nt_ = nt;
            pending_ = nt - 1;
            ++generation_;
        }
        wake_.notify_all();
    }

    void finish() {
        // The caller's part usually ends close to the workers': waiting a little before
        // sleeping saves the caller's own wake-up, which on a virtual machine costs about as
        // much as starting the region did.
        for (int i = 0; i < FINISH_SPINS && pending_.load(std::memory_order_acquire) != 0; ++i) {
            std::this_thread::yield();
        }
        std::unique_lock<std::mutex> lock(m_);
        done_.wait(lock, [this] { return pending_ == 0; });
    }

private:
    Pool()
#ifdef JACGEOM_HAS_GETPID
        : pid_(getpid())
#endif
    {
    }

    bool owned_by_this_process() const {
#ifdef JACGEOM_HAS_GETPID
        return pid_ == getpid();
#else
        return true;
#endif
    }

    void grow(std::int64_t workers) {
        while (size_ < workers) {
            std::uint64_t seen;
            {
                std::lock_guard<std::mutex> lock(m_);
                seen = generation_;
            }
            // Counted once started: a thread that fails to start (std::system_error, out
            // to the caller) must not be waited for by later regions.
            std::thread(&Pool::work, this, size_ + 1, seen).detach();
            ++size_;
        }
    }

    void work(std::int64_t index, std::uint64_t seen) {
        inside_region() = true;
        std::unique_lock<std::mutex> lock(m_);
        for (;;) {
            wake_.wait(lock, [&] { return generation_ != seen; });
            seen = generation_;
            if (index >= nt_) continue;  // not needed in this region
            const Task task = task_;
            void* const ctx = ctx_;
            lock.unlock();
            task(ctx, index);  // never throws: the region's runner catches
            lock.lock();
            if (--pending_ == 0) done_.notify_one();
        }
    }

#ifdef JACGEOM_HAS_GETPID
    pid_t pid_;
#endif
    std::int64_t size_ = 0;  // workers started; changed only under `busy`
    std::mutex m_;
    std::condition_variable wake_, done_;
    std::uint64_t generation_ = 0;
    std::int64_t nt_ = 0;
    std::atomic<std::int64_t> pending_{0};  // written under m_, read without it by finish()
    Task task_ = nullptr;
    void* ctx_ = nullptr;
};

}  // namespace detail

// Calls fn(thread_index, begin, end) on [0, count) split into at most num_threads chunks,
// each of at least min_per_thread items. Exceptions are rethrown on the calling thread.
template <class Fn>
void parallel_for(std::int64_t count, std::int64_t min_per_thread, Fn&& fn) {
    if (count <= 0) return;
    std::int64_t nt = num_threads_setting().load();
    nt = std::max<std::int64_t>(1, std::min<std::int64_t>(nt, count / std::max<std::int64_t>(1, min_per_thread)));
    if (nt <= 1 || detail::inside_region()) {
        fn(0, std::int64_t(0), count);
        return;
    }
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
    auto run_inside = [&run](std::int64_t t) {
        bool& inside = detail::inside_region();
        const bool was = inside;
        inside = true;
        run(t);
        inside = was;
    };
    detail::Pool& pool = detail::Pool::instance();
    std::unique_lock<std::mutex> busy(pool.busy, std::try_to_lock);
    if (busy.owns_lock()) {
        pool.start(
            nt, [](void* ctx, std::int64_t t) { (*static_cast<decltype(run)*>(ctx))(t); }, &run);
        run_inside(0);
        pool.finish();
    } else {
        // Another thread's region holds the pool: this one gets threads of its own.
        std::vector<std::thread> threads;
        threads.reserve(static_cast<size_t>(nt - 1));
        for (std::int64_t t = 1; t < nt; ++t) threads.emplace_back(run_inside, t);
        run_inside(0);
        for (auto& th : threads) th.join();
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace jacgeom
