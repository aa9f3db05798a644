/* The decode thread governor (src/context/threads.c) against scripted step
 * times: it must keep the full count on a steady machine, drop to one
 * thread when steps slow down and one thread is faster, stay when the
 * slowdown is the machine's alone, and come back when the cores do. */
#include "context/threads.h"
#include "testutil.h"

/* Runs n steps where a step on t threads takes time(t) seconds. */
static void steps(kvq_thread_gov *g, int n, double t1, double tmax) {
    for (int i = 0; i < n; i++) {
        const int t = kvq_thread_gov_next(g);
        kvq_thread_gov_done(g, t, t == 1 ? t1 : tmax);
    }
}

static void test_steady_keeps_all_threads(void **st) {
    (void)st;
    kvq_thread_gov g;
    kvq_thread_gov_init(&g, 2, true);
    steps(&g, 500, 0.020, 0.011); /* one thread is slower: the first probe must not switch */
    assert_int_equal(g.cur, 2);
    assert_int_equal(g.n_switch, 0);
}

static void test_contention_then_recovery(void **st) {
    (void)st;
    kvq_thread_gov g;
    kvq_thread_gov_init(&g, 2, true);
    steps(&g, 50, 0.020, 0.010);
    assert_int_equal(g.cur, 2);
    steps(&g, 20, 0.022, 0.060); /* a busy process: two threads now lose time slices */
    assert_int_equal(g.cur, 1);
    steps(&g, 200, 0.022, 0.060); /* retries at two threads lose, so it stays */
    assert_int_equal(g.cur, 1);
    steps(&g, 200, 0.020, 0.010); /* the cores are free again */
    assert_int_equal(g.cur, 2);
    assert_int_equal(g.n_switch, 2);
}

static void test_contention_from_the_start(void **st) {
    (void)st;
    kvq_thread_gov g;
    kvq_thread_gov_init(&g, 2, true);
    steps(&g, 30, 0.022, 0.060); /* no jump to see: the first probe finds it */
    assert_int_equal(g.cur, 1);
}

static void test_machine_slowdown_is_not_the_count(void **st) {
    (void)st;
    kvq_thread_gov g;
    kvq_thread_gov_init(&g, 2, true);
    steps(&g, 50, 0.020, 0.010);
    steps(&g, 100, 0.040, 0.020); /* everything twice as slow (bandwidth drift): two threads still win */
    assert_int_equal(g.cur, 2);
    assert_int_equal(g.n_switch, 0);
}

static void test_fixed_and_single(void **st) {
    (void)st;
    kvq_thread_gov g;
    kvq_thread_gov_init(&g, 4, false);
    steps(&g, 50, 0.010, 0.090);
    assert_int_equal(kvq_thread_gov_next(&g), 4); /* fixed: never changes */
    kvq_thread_gov_init(&g, 1, true);
    steps(&g, 50, 0.010, 0.010);
    assert_int_equal(kvq_thread_gov_next(&g), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steady_keeps_all_threads),  cmocka_unit_test(test_contention_then_recovery),
        cmocka_unit_test(test_contention_from_the_start), cmocka_unit_test(test_machine_slowdown_is_not_the_count),
        cmocka_unit_test(test_fixed_and_single),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
