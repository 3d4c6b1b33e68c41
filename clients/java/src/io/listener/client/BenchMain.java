package io.listener.client;

import io.listener.v1.ListenerEvent;
import io.listener.v1.TaskRun;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/**
 * {@code java -cp … io.listener.client.BenchMain HOST:PORT N}: publishes N TASK_FAIL events with
 * the default settings and prints one JSON line with the rate, for {@code make bench}.
 */
public final class BenchMain {
  private BenchMain() {}

  public static void main(String[] args) throws Exception {
    String target = args[0];
    int count = Integer.parseInt(args[1]);
    List<ListenerEvent> events = new ArrayList<>(count);
    for (int i = 0; i < count; i++) {
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
      long started = System.nanoTime();
      List<CompletableFuture<PublishResult>> futures = new ArrayList<>(count);
      for (ListenerEvent event : events) {
        futures.add(publisher.publish(event));
      }
      publisher.flush();
      double seconds = (System.nanoTime() - started) / 1e9;
      long last = futures.get(count - 1).join().sequence();
      ListenerPublisher.Stats stats = publisher.stats();
      System.out.printf(
          "{\"events\": %d, \"seconds\": %.3f, \"events_per_s\": %.0f, \"batches\": %d,"
              + " \"last_sequence\": %d}%n",
          count, seconds, count / seconds, stats.batches(), last);
    }
  }
}
