package io.listener.client;

import io.listener.v1.ListenerEvent;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * {@code listener-publish --server HOST:PORT [--token T] [--tls-ca FILE]}: publishes one event per
 * stdin line (the ListenerEvent JSON, as PublishEvent takes it) and prints {@code ID SEQUENCE} per
 * event on stdout, in input order. Exit codes: 0 all stored, 1 a publish failed, 2 usage, 4 a line
 * that is not a valid event (the lines before it are published and printed; none after it).
 */
public final class PublishMain {
  private static final String USAGE =
      String.join(
          "\n",
          "usage: listener-publish --server HOST:PORT[,HOST:PORT…] [--token T] [--tls-ca FILE]",
          "                        [--tls-cert FILE --tls-key FILE] [--tls-server-name NAME]",
          "                        [--batch-size N] [--linger-ms MS] [--buffer N]",
          "Reads one ListenerEvent JSON per stdin line; prints 'ID SEQUENCE' per event, in order.",
          "Environment: LISTENER_TOKEN stands for --token.");

  private PublishMain() {}

  public static void main(String[] args) throws Exception {
    System.exit(run(args));
  }

  private static int usage(String problem) {
    System.err.println("listener-publish: " + problem);
    System.err.println(USAGE);
    return 2;
  }

  static int run(String[] args) throws Exception {
    ListenerPublisher.Builder builder = ListenerPublisher.builder();
    List<String> servers = new ArrayList<>();
    String token = System.getenv("LISTENER_TOKEN");
    File cert = null;
    File key = null;
    for (int i = 0; i < args.length; i++) {
      String flag = args[i];
      if (flag.equals("-h") || flag.equals("--help")) {
        System.out.println(USAGE);
        return 0;
      }
      if (i + 1 >= args.length) {
        return usage(flag.startsWith("--") ? flag + " needs a value" : "unknown argument " + flag);
      }
      String value = args[++i];
      try {
        switch (flag) {
          case "--server" -> servers.add(value);
          case "--token" -> token = value;
          case "--tls-ca" -> builder.tlsCa(new File(value));
          case "--tls-cert" -> cert = new File(value);
          case "--tls-key" -> key = new File(value);
          case "--tls-server-name" -> builder.tlsServerName(value);
          case "--batch-size" -> builder.batchSize(Integer.parseInt(value));
          case "--linger-ms" -> builder.linger(Duration.ofMillis(Long.parseLong(value)));
          case "--buffer" -> builder.bufferSize(Integer.parseInt(value));
          default -> {
            return usage("unknown argument " + flag);
          }
        }
      } catch (NumberFormatException e) {
        return usage(flag + " needs a number, not " + value);
      }
    }
    if (servers.isEmpty()) {
      return usage("--server is required");
    }
    if ((cert == null) != (key == null)) {
      return usage("--tls-cert and --tls-key go together");
    }
    if (cert != null) {
      builder.tlsClientCert(cert, key);
    }
    // A pipe has no caller to tell "buffer full": wait for room for as long as it takes.
    builder
        .targets(servers)
        .token(token)
        .whenFull(ListenerPublisher.WhenFull.BLOCK)
        .blockTimeout(Duration.ofDays(365))
        .retry(
            new RetryPolicy(
                Duration.ofMillis(50),
                Duration.ofSeconds(2),
                2.0,
                0.5,
                Duration.ofSeconds(10),
                Duration.ofMinutes(10)));
    ListenerPublisher publisher;
    try {
      publisher = builder.build();
    } catch (IllegalArgumentException | IOException e) {
      return usage(e.getMessage());
    }
    return pump(publisher);
  }

  /** Publishes stdin's lines; a printer thread writes the results in order as they complete. */
  private static int pump(ListenerPublisher publisher) throws Exception {
    BlockingQueue<CompletableFuture<PublishResult>> pending = new LinkedBlockingQueue<>();
    CompletableFuture<PublishResult> end = new CompletableFuture<>();
    int[] failures = {0};
    Thread printer =
        new Thread(
            () -> failures[0] = print(pending, end, System.out, System.err), "listener-printer");
    printer.start();
    int status = 0;
    try (BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8), 1 << 16)) {
      String line;
      int number = 0;
      while ((line = in.readLine()) != null) {
        number++;
        if (line.isBlank()) {
          continue;
        }
        ListenerEvent event;
        try {
          event = ListenerPublisher.parseEvent(line);
          ListenerPublisher.checkEvent(event);
        } catch (IllegalArgumentException e) {
          System.err.println("listener-publish: line " + number + ": " + e.getMessage());
          status = 4;
          break;
        }
        pending.put(publisher.publish(event));
      }
    } finally {
      publisher.close();
      pending.put(end);
      printer.join();
    }
    return status != 0 ? status : failures[0] > 0 ? 1 : 0;
  }

  private static int print(
      BlockingQueue<CompletableFuture<PublishResult>> pending,
      CompletableFuture<PublishResult> end,
      PrintStream out,
      PrintStream err) {
    int failures = 0;
    BufferedWriter writer =
        new BufferedWriter(new OutputStreamWriter(out, StandardCharsets.UTF_8), 1 << 16);
    try {
      while (true) {
        CompletableFuture<PublishResult> next = pending.poll();
        if (next == null) {
          writer.flush(); // nothing ready: let the reader of the pipe see what we have
          next = pending.poll(1, TimeUnit.DAYS);
          if (next == null) {
            continue;
          }
        }
        if (next == end) {
          break;
        }
        try {
          PublishResult result = next.join();
          writer.write(result.id());
          writer.write(' ');
          writer.write(Long.toString(result.sequence()));
          writer.write('\n');
        } catch (CompletionException e) {
          failures++;
          writer.flush();
          err.println("listener-publish: " + e.getCause().getMessage());
        }
      }
      writer.flush();
    } catch (IOException | InterruptedException e) {
      err.println("listener-publish: " + e);
      failures++;
    }
    return failures;
  }
}
