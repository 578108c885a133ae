// parallel_for under stress, without Python: every part of a region runs once, with its
// static range, whatever the thread count; parts 1..w run on the pool's workers (the same
// thread for a part every time) and the caller runs part 0 and any part whose thread the
// system refused; callers meeting on the pool, nested regions and exceptions.
//
// pthread_create is replaced here (the executable's definition comes first) to refuse a
// share of thread starts, the failure a process at its thread or memory limit meets.
// Prints "ok <regions where a thread was refused>" and exits 0, or names the failure.
#include <jacgeom/parallel.hpp>

#include <dlfcn.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <stdexcept>
#include <string>

namespace {

std::atomic<int> refuse_percent{0};
std::atomic<unsigned> draws{12345};

[[noreturn]] void fail(const std::string& what) {
    std::printf("FAIL %s\n", what.c_str());
    std::fflush(stdout);
    std::_Exit(1);
}

}  // namespace

extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attr,
                              void* (*start)(void*), void* arg) {
    using Create = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
    static const auto real = reinterpret_cast<Create>(dlsym(RTLD_NEXT, "pthread_create"));
    const unsigned x = draws.fetch_add(2654435761u) * 2246822519u;
    if (static_cast<int>((x >> 8) % 100) < refuse_percent.load()) return EAGAIN;
    return real(thread, attr, start, arg);
}

using jacgeom::parallel_for;
using index_t = std::int64_t;

// One region of `parts` parts of one item each; checks coverage and who ran what.
long region(int parts, std::map<index_t, std::thread::id>& owner) {
    jacgeom::num_threads_setting().store(parts);
    std::vector<std::thread::id> who(static_cast<size_t>(parts));
    std::vector<std::atomic<int>> runs(static_cast<size_t>(parts));
    parallel_for(parts, 1, [&](index_t t, index_t begin, index_t end) {
        if (begin != t || end != t + 1) fail("part " + std::to_string(t) + " got another range");
        who[static_cast<size_t>(t)] = std::this_thread::get_id();
        runs[static_cast<size_t>(t)]++;
    });
    const auto me = std::this_thread::get_id();
    int w = 0;  // parts 1..w on workers: the rest on this thread
    while (w + 1 < parts && who[static_cast<size_t>(w) + 1] != me) ++w;
    for (int t = 0; t < parts; ++t) {
        const auto u = static_cast<size_t>(t);
        if (runs[u] != 1) fail("part " + std::to_string(t) + " ran " + std::to_string(runs[u]) + " times");
        if (t == 0 || t > w) {
            if (who[u] != me) fail("part " + std::to_string(t) + " left the caller");
        } else {
            auto seen = owner.emplace(t, who[u]).first;
            if (seen->second != who[u]) fail("part " + std::to_string(t) + " moved to another worker");
        }
    }
    return w < parts - 1 ? 1 : 0;
}

int main() {
    std::mt19937 rng(1);
    std::map<index_t, std::thread::id> owner;
    long refused = 0;
    // Counts up and down, with nine in ten thread starts refused: the pool grows a worker
    // at a time, and regions before it is grown run some parts on the caller.
    refuse_percent = 90;
    for (int i = 0; i < 3000; ++i) refused += region(1 + static_cast<int>(rng() % 24), owner);
    if (refused == 0) fail("no region met a refused thread");

    // Three callers at once (one holds the pool, the others start their own threads, half
    // of them refused), a nested region in each part, and an exception from one part of
    // every fourth region.
    refuse_percent = 0;  // for this test's own threads
    jacgeom::num_threads_setting().store(3);
    std::atomic<long> wrong{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> callers;
    for (int c = 0; c < 3; ++c) {
        callers.emplace_back([c, &wrong, &go] {
            while (!go) std::this_thread::yield();
            for (int i = 0; i < 400; ++i) {
                std::vector<std::atomic<long>> sums(64);
                const bool throws = (i + c) % 4 == 0;
                try {
                    parallel_for(64, 1, [&](index_t, index_t begin, index_t end) {
                        for (index_t j = begin; j < end; ++j) {
                            parallel_for(8, 1, [&](index_t, index_t b, index_t e) {
                                sums[static_cast<size_t>(j)] += e - b;
                            });
                            if (throws && j == 40) throw std::runtime_error("part 40");
                        }
                    });
                    if (throws) wrong++;
                } catch (const std::runtime_error& e) {
                    if (!throws || std::string(e.what()) != "part 40") wrong++;
                }
                if (!throws) {
                    for (auto& s : sums) wrong += s != 8;
                }
            }
        });
    }
    refuse_percent = 50;
    go = true;
    for (auto& t : callers) t.join();
    if (wrong != 0) fail(std::to_string(wrong.load()) + " wrong results among concurrent callers");
    std::printf("ok %ld\n", refused);
    return 0;
}
