package io.listener.client;

import io.listener.v1.ListenerEvent;
import io.listener.v1.TaskRun;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/**
 * {@code java -cp … io.listener.client.BenchMain HOST:PORT N [WARMUP]}: publishes WARMUP events
 * (default 20,000) untimed, so the JIT has compiled the hot paths as in a long-running scheduler,
 * then N TASK_FAIL events with the default settings, and prints one JSON line with the rate
 * ({@code python -m bench.publishers}).
 */
public final class BenchMain {
  private BenchMain() {}

  public static void main(String[] args) throws Exception {
    String target = args[0];
    int count = Integer.parseInt(args[1]);
    int warmup = args.length > 2 ? Integer.parseInt(args[2]) : 20_000;
    List<ListenerEvent> events = new ArrayList<>(warmup + count);
    for (int i = 0; i < warmup + count; i++) {
      events.add(
          ListenerEvent.newBuilder()
              .setSource("master-1:5678")
              .setTaskFail(
                  TaskRun.newBuilder()
                      .setProjectName("etl")
                      .setTaskName("t" + i)
                      .setTaskInstanceId(i)
                      .setWorkflowInstanceId(1))
              .build());
    }
    try (ListenerPublisher publisher = ListenerPublisher.builder().targets(target).build()) {
      for (ListenerEvent event : events.subList(0, warmup)) {
        publisher.publish(event);
      }
      publisher.flush();
      long warmupBatches = publisher.stats().batches();
      long started = System.nanoTime();
      List<CompletableFuture<PublishResult>> futures = new ArrayList<>(count);
      for (ListenerEvent event : events.subList(warmup, warmup + count)) {
        futures.add(publisher.publish(event));
      }
      publisher.flush();
      double seconds = (System.nanoTime() - started) / 1e9;
      long last = futures.get(count - 1).join().sequence();
      ListenerPublisher.Stats stats = publisher.stats();
      System.out.printf(
          "{\"events\": %d, \"seconds\": %.3f, \"events_per_s\": %.0f, \"batches\": %d,"
              + " \"last_sequence\": %d}%n",
          count, seconds, count / seconds, stats.batches() - warmupBatches, last);
    }
  }
}
