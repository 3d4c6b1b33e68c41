package io.listener.client;

import io.listener.v1.ListenerEvent;
import io.listener.v1.TaskRun;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The Java publisher's batching, linger and buffer policies, run by tests/publisher/test_java.py
 * as {@code PublisherChecks LIVE_ADDR DEAD_ADDR} against a real API server (LIVE, with an empty
 * store) and an address nothing listens on (DEAD). Prints "ok NAME" per check; the first failed
 * check ends it with an exception (exit status 1).
 */
public final class PublisherChecks {
  private static final RetryPolicy QUICK =
      new RetryPolicy(
          Duration.ofMillis(20), Duration.ofMillis(200), 2.0, 0.5, Duration.ofSeconds(30), null);

  private PublisherChecks() {}

  private static ListenerEvent event(int n) {
    return ListenerEvent.newBuilder()
        .setTaskFail(TaskRun.newBuilder().setTaskName("t" + n).setTaskInstanceId(n))
        .build();
  }

  private static void check(boolean condition, String what) {
    if (!condition) {
      throw new AssertionError(what);
    }
  }

  private static <T extends Throwable> T raises(Class<T> type, ThrowingRunnable body)
      throws Exception {
    try {
      body.run();
    } catch (Throwable e) {
      Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
      if (type.isInstance(cause)) {
        return type.cast(cause);
      }
      throw new AssertionError("expected " + type.getSimpleName() + ", got " + cause, cause);
    }
    throw new AssertionError("expected " + type.getSimpleName() + ", nothing raised");
  }

  private interface ThrowingRunnable {
    void run() throws Exception;
  }

  public static void main(String[] args) throws Exception {
    String live = args[0];
    String dead = args[1];

    // Full batches go at once; the rest waits for the linger (an hour here) or a flush.
    try (ListenerPublisher p =
        ListenerPublisher.builder().targets(live).batchSize(10).linger(Duration.ofHours(1)).build()) {
      List<CompletableFuture<PublishResult>> futures = new ArrayList<>();
      for (int i = 0; i < 25; i++) {
        futures.add(p.publish(event(i)));
      }
      for (int i = 0; i < 20; i++) {
        futures.get(i).get(60, TimeUnit.SECONDS);
      }
      check(futures.subList(20, 25).stream().noneMatch(CompletableFuture::isDone), "5 wait");
      check(p.stats().batches() == 2 && p.stats().buffered() == 5, "two batches: " + p.stats());
      p.flush(Duration.ofSeconds(60));
      check(p.stats().batches() == 3 && p.stats().sent() == 25, "three batches: " + p.stats());
      for (int i = 0; i < 25; i++) {
        check(futures.get(i).get().sequence() == i + 1, "sequence of event " + i);
      }
      System.out.println("ok batches by count, then flush");
    }

    // A partial batch goes once the linger is over, without a flush.
    try (ListenerPublisher p =
        ListenerPublisher.builder().targets(live).linger(Duration.ofMillis(300)).build()) {
      long started = System.nanoTime();
      List<CompletableFuture<PublishResult>> futures = new ArrayList<>();
      for (int i = 0; i < 3; i++) {
        futures.add(p.publish(event(100 + i)));
      }
      CompletableFuture.allOf(futures.toArray(CompletableFuture[]::new)).get(60, TimeUnit.SECONDS);
      check(System.nanoTime() - started >= TimeUnit.MILLISECONDS.toNanos(250), "waited the linger");
      check(p.stats().batches() == 1, "one batch: " + p.stats());
      System.out.println("ok linger");
    }

    // FAIL: a full buffer refuses at once; flush(timeout) gives up; close(timeout) fails the rest.
    ListenerPublisher failing =
        ListenerPublisher.builder()
            .targets(dead)
            .bufferSize(3)
            .whenFull(ListenerPublisher.WhenFull.FAIL)
            .retry(QUICK)
            .build();
    List<CompletableFuture<PublishResult>> stuck = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      stuck.add(failing.publish(event(i)));
    }
    long started = System.nanoTime();
    BufferFullException full = raises(BufferFullException.class, () -> failing.publish(event(3)));
    check(System.nanoTime() - started < TimeUnit.SECONDS.toNanos(5), "refused at once");
    check(full.status().getCode() == io.grpc.Status.Code.RESOURCE_EXHAUSTED, "status");
    raises(TimeoutException.class, () -> failing.flush(Duration.ofMillis(200)));
    check(failing.stats().buffered() == 3 && failing.stats().retried() >= 1, "" + failing.stats());
    failing.close(Duration.ofMillis(200));
    for (CompletableFuture<PublishResult> future : stuck) {
      raises(PublisherClosedException.class, () -> future.get(10, TimeUnit.SECONDS));
    }
    check(failing.stats().failed() == 3 && failing.stats().buffered() == 0, "" + failing.stats());
    raises(PublisherClosedException.class, () -> failing.publish(event(9)));
    System.out.println("ok fail when full, flush and close with timeouts");

    // BLOCK: a full buffer waits up to the block timeout.
    ListenerPublisher blocking =
        ListenerPublisher.builder()
            .targets(dead)
            .bufferSize(2)
            .blockTimeout(Duration.ofMillis(300))
            .retry(QUICK)
            .build();
    blocking.publish(event(0));
    blocking.publish(event(1));
    started = System.nanoTime();
    raises(BufferFullException.class, () -> blocking.publish(event(2)));
    long waited = System.nanoTime() - started;
    check(waited >= TimeUnit.MILLISECONDS.toNanos(250), "blocked for the timeout: " + waited);
    blocking.close(Duration.ZERO);
    System.out.println("ok block when full");

    // An event the server would refuse is refused before it joins a batch.
    try (ListenerPublisher p = ListenerPublisher.builder().targets(live).build()) {
      raises(IllegalArgumentException.class, () -> p.publish(ListenerEvent.getDefaultInstance()));
      raises(IllegalArgumentException.class, () -> p.publishJson("{\"task_fail\": {\"x\": 1}}"));
      check(p.publishJson("{\"taskFail\": {\"taskName\": \"j\"}}").get(60, TimeUnit.SECONDS)
              .sequence() == 29,
          "the 29th event");
      System.out.println("ok events checked before batching");
    }
  }
}
