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
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define JACGEOM_HAS_FORK 1
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

// Workers 1..size() wait for a region, each on a condition variable of its own so that a
// region wakes only the workers it needs; the caller takes part 0. One caller at a time
// holds `busy` for a whole region; another caller that finds it held starts its own threads.
class Pool {
public:
    using Task = void (*)(void*, std::int64_t);
    static constexpr int FINISH_SPINS = 1000;  // yields before the caller sleeps

    // The process's pool, or nullptr where none can be made (the caller then starts
    // threads of its own). A child after fork gets a new one (the parent's workers did not
    // survive the fork, and its mutexes may be held by threads that no longer exist); it is
    // made without a lock, which a fork could leave held. Pools are never destroyed:
    // detached workers wait on their members until the process ends.
    static Pool* instance() noexcept {
        Pool* p = slot().load(std::memory_order_acquire);
        if (p != nullptr) return p;
#ifdef JACGEOM_HAS_FORK
        // Registered by every thread that makes a pool, before it does: a flag saying
        // "done" could let a second thread make one and fork before the first registered.
        // A handler per pool made; each only clears the slot in a child. Without one, a
        // child would wait on the parent's workers: no pool then.
        if (pthread_atfork(nullptr, nullptr, [] { slot().store(nullptr); }) != 0) return nullptr;
#endif
        Pool* fresh = new (std::nothrow) Pool();
        if (fresh == nullptr) return nullptr;
        if (slot().compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return fresh;
        delete fresh;  // another thread's pool won; this one has started no worker
        return p;
    }

    std::mutex busy;

    // Hands parts 1..w of a region of nt parts to the workers and returns w, requires `busy`.
    // w < nt - 1 where threads could not be started: the caller runs parts 0 and w+1..nt-1
    // itself, then waits in finish() if w > 0.
    std::int64_t start(std::int64_t nt, Task task, void* ctx) {
        grow(nt - 1);
        const std::int64_t w = std::min<std::int64_t>(nt - 1, static_cast<std::int64_t>(workers_.size()));
        if (w == 0) return 0;
        {
            std::lock_guard<std::mutex> lock(m_);
            task_ = task;
            ctx_ = ctx;
            needed_ = w;
            pending_ = w;
            ++generation_;
        }
        for (std::int64_t i = 0; i < w; ++i) workers_[static_cast<size_t>(i)]->notify_one();
        return w;
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
    Pool() = default;

    static std::atomic<Pool*>& slot() {
        static std::atomic<Pool*> pool{nullptr};
        return pool;
    }

    // Starts workers up to `count`; where the system refuses a thread, the pool stays at
    // the size it has and the caller runs the missing parts.
    void grow(std::int64_t count) {
        while (static_cast<std::int64_t>(workers_.size()) < count) {
            try {
                auto wake = std::make_unique<std::condition_variable>();
                std::uint64_t seen;
                {
                    std::lock_guard<std::mutex> lock(m_);
                    seen = generation_;
                }
                const auto index = static_cast<std::int64_t>(workers_.size()) + 1;
                workers_.reserve(workers_.size() + 1);
                std::thread(&Pool::work, this, index, wake.get(), seen).detach();
                workers_.push_back(std::move(wake));  // cannot throw: reserved
            } catch (...) {
                return;
            }
        }
    }

    void work(std::int64_t index, std::condition_variable* wake, std::uint64_t seen) {
        inside_region() = true;
#ifdef __linux__
        pthread_setname_np(pthread_self(), "jacgeom-worker");  // as top -H and /proc show it
#endif
        std::unique_lock<std::mutex> lock(m_);
        for (;;) {
            wake->wait(lock, [&] { return generation_ != seen && index <= needed_; });
            seen = generation_;
            const Task task = task_;
            void* const ctx = ctx_;
            lock.unlock();
            task(ctx, index);  // never throws: the region's runner catches
            lock.lock();
            if (--pending_ == 0) done_.notify_one();
        }
    }

    // Changed only under `busy`; a worker keeps a pointer to its own condition variable.
    std::vector<std::unique_ptr<std::condition_variable>> workers_;
    std::mutex m_;
    std::condition_variable done_;
    std::uint64_t generation_ = 0;
    std::int64_t needed_ = 0;  // workers 1..needed_ take part in the current region
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
    detail::Pool* pool = detail::Pool::instance();
    std::unique_lock<std::mutex> busy;
    if (pool != nullptr) busy = std::unique_lock<std::mutex>(pool->busy, std::try_to_lock);
    if (busy.owns_lock()) {
        const std::int64_t w = pool->start(
            nt, [](void* ctx, std::int64_t t) { (*static_cast<decltype(run)*>(ctx))(t); }, &run);
        run_inside(0);
        for (std::int64_t t = w + 1; t < nt; ++t) run_inside(t);  // parts no worker could take
        if (w > 0) pool->finish();
    } else {
        // Another thread's region holds the pool (or there is none): this one starts threads
        // of its own, and runs on the caller the parts of any the system refuses.
        std::vector<std::thread> threads;
        std::int64_t t = 1;
        try {
            threads.reserve(static_cast<size_t>(nt - 1));
            for (; t < nt; ++t) threads.emplace_back(run_inside, t);
        } catch (...) {
        }
        for (std::int64_t u = t; u < nt; ++u) run_inside(u);
        run_inside(0);
        for (auto& th : threads) th.join();
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace jacgeom
