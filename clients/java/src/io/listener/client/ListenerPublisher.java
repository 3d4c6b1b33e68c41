package io.listener.client;

import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.util.JsonFormat;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.MetadataUtils;
import io.listener.v1.EventServiceGrpc;
import io.listener.v1.EventType;
import io.listener.v1.ListenerEvent;
import io.listener.v1.PublishEventResponse;
import io.listener.v1.PublishEventsRequest;
import io.listener.v1.PublishEventsResponse;
import io.netty.handler.ssl.JdkAlpn;
import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;
import java.io.File;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import javax.net.ssl.SSLException;

/**
 * Publishes a scheduler's events to the listener API servers: batched, retried, bounded.
 *
 * <p>{@link #publish} takes an event into a bounded buffer and returns a future of its {@link
 * PublishResult} at once. One sender thread groups the buffer into {@code PublishEvents} calls
 * (up to {@code batchSize} events, or what arrived within {@code linger} of the oldest), one call
 * in flight at a time, so the store keeps this publisher's events in the order they were
 * published. Each batch carries a {@code request_id} that every retry of it reuses, so a batch
 * whose reply was lost is answered from the store the second time instead of being stored again.
 * UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are retried with exponential backoff and
 * jitter, round robin over the targets, skipping for a while one that refused a connection; any
 * other status fails the batch's futures with a {@link PublishException}.
 *
 * <p>Futures complete on the sender thread: chain slow work with the {@code *Async} methods.
 *
 * <pre>{@code
 * try (ListenerPublisher publisher = ListenerPublisher.builder()
 *     .targets("api-1:50051", "api-2:50051").token(token).build()) {
 *   publisher.publish(event).thenAccept(r -> log.info("stored as {}", r.sequence()));
 * }
 * }</pre>
 */
public final class ListenerPublisher implements AutoCloseable {

  /** What {@link #publish} does when the buffer is full. */
  public enum WhenFull {
    /** Wait up to the block timeout for room, then throw {@link BufferFullException}. */
    BLOCK,
    /** Throw {@link BufferFullException} at once. */
    FAIL
  }

  /** Counters since the publisher was built; see the field names. */
  public record Stats(long buffered, long sent, long retried, long failed, long batches) {}

  private static final EnumSet<Status.Code> RETRYABLE =
      EnumSet.of(
          Status.Code.UNAVAILABLE, Status.Code.DEADLINE_EXCEEDED, Status.Code.RESOURCE_EXHAUSTED);
  private static final int MAX_SOURCE_CHARS = 255;
  private static final JsonFormat.Parser JSON = JsonFormat.parser();

  private static final class Item {
    final ListenerEvent event;
    final int size;
    final long arrival;
    final CompletableFuture<PublishResult> future = new CompletableFuture<>();

    Item(ListenerEvent event, long arrival) {
      this.event = event;
      this.size = event.getSerializedSize();
      this.arrival = arrival;
    }
  }

  private static final class Target {
    final String address;
    final ManagedChannel channel;
    final EventServiceGrpc.EventServiceBlockingStub stub;
    long downUntil;
    final AtomicLong sent = new AtomicLong();

    Target(String address, ManagedChannel channel, EventServiceGrpc.EventServiceBlockingStub stub) {
      this.address = address;
      this.channel = channel;
      this.stub = stub;
      this.downUntil = System.nanoTime();
    }
  }

  private final List<Target> targets;
  private final int batchSize;
  private final int maxBatchBytes;
  private final long lingerNanos;
  private final int bufferSize;
  private final WhenFull whenFull;
  private final long blockTimeoutNanos;
  private final RetryPolicy retry;
  private final long downForNanos;

  private final ReentrantLock lock = new ReentrantLock();
  private final Condition work = lock.newCondition();
  private final Condition room = lock.newCondition();
  private final Condition progress = lock.newCondition();
  private final ArrayDeque<Item> queue = new ArrayDeque<>();
  private List<Item> inflight = List.of();
  private long accepted;
  private long taken;
  private long resolved;
  private long flushUpto;
  private boolean closing;
  private boolean closed;
  private final AtomicLong sent = new AtomicLong();
  private final AtomicLong retried = new AtomicLong();
  private final AtomicLong failed = new AtomicLong();
  private final AtomicLong batches = new AtomicLong();
  private int next;
  private final Thread sender;

  private ListenerPublisher(Builder b) throws SSLException {
    if (b.targets.isEmpty()) {
      throw new IllegalArgumentException("at least one target (host:port) is needed");
    }
    if (b.batchSize < 1 || b.bufferSize < 1 || b.maxBatchBytes < 1) {
      throw new IllegalArgumentException("batchSize, bufferSize and maxBatchBytes must be positive");
    }
    if ((b.tlsCert == null) != (b.tlsKey == null)) {
      throw new IllegalArgumentException("tlsCert and tlsKey go together");
    }
    this.batchSize = b.batchSize;
    this.maxBatchBytes = b.maxBatchBytes;
    this.lingerNanos = b.linger.toNanos();
    this.bufferSize = b.bufferSize;
    this.whenFull = b.whenFull;
    this.blockTimeoutNanos = b.blockTimeout.toNanos();
    this.retry = b.retry;
    this.downForNanos = b.downFor.toNanos();
    List<Target> made = new ArrayList<>();
    for (String address : b.targets) {
      NettyChannelBuilder channel =
          NettyChannelBuilder.forTarget(address).maxInboundMessageSize(64 << 20);
      if (b.tls || b.tlsCa != null || b.tlsCert != null) {
        channel.sslContext(sslContext(b));
        if (b.tlsServerName != null) {
          channel.overrideAuthority(b.tlsServerName);
        }
      } else {
        channel.usePlaintext();
      }
      ManagedChannel built = channel.build();
      EventServiceGrpc.EventServiceBlockingStub stub = EventServiceGrpc.newBlockingStub(built);
      if (b.token != null && !b.token.isEmpty()) {
        Metadata headers = new Metadata();
        headers.put(
            Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER),
            "Bearer " + b.token);
        stub = stub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
      }
      made.add(new Target(address, built, stub));
    }
    this.targets = Collections.unmodifiableList(made);
    this.sender = new Thread(this::run, "listener-publisher");
    this.sender.setDaemon(true);
    this.sender.start();
  }

  /**
   * The TLS context: Netty's own choice where it can offer "h2" through ALPN (OpenSSL, or a Netty
   * built with JDK ALPN), else the JDK's engine with ALPN put back (Debian's Netty).
   */
  private static SslContext sslContext(Builder b) throws SSLException {
    SslContextBuilder ssl = GrpcSslContexts.forClient();
    if (b.tlsCa != null) {
      ssl.trustManager(b.tlsCa);
    }
    if (b.tlsCert != null) {
      ssl.keyManager(b.tlsCert, b.tlsKey);
    }
    try {
      return ssl.build();
    } catch (UnsupportedOperationException e) {
      if (!JdkAlpn.available()) {
        throw e;
      }
      return JdkAlpn.clientContext(b.tlsCa, b.tlsCert, b.tlsKey);
    }
  }

  public static Builder builder() {
    return new Builder();
  }

  /**
   * A ListenerEvent from its proto3 JSON form (snake_case or lowerCamelCase names, and the short
   * enum name such as {@code "TASK_FAIL"} for {@code type}, as the HTTP PublishEvent takes it).
   */
  public static ListenerEvent parseEvent(String json) {
    ListenerEvent.Builder event = ListenerEvent.newBuilder();
    try {
      JSON.merge(withFullTypeName(json), event);
    } catch (InvalidProtocolBufferException | RuntimeException e) {
      throw new IllegalArgumentException("not a ListenerEvent: " + e.getMessage(), e);
    }
    return event.build();
  }

  /** {@code json} with a short {@code "type"} ({@code TASK_FAIL}) spelled in full. */
  @SuppressWarnings("deprecation")
  private static String withFullTypeName(String json) {
    com.google.gson.JsonElement root;
    try {
      root = new com.google.gson.JsonParser().parse(json);
    } catch (RuntimeException e) {
      return json; // JsonFormat names what is wrong with it
    }
    if (!root.isJsonObject()) {
      return json;
    }
    com.google.gson.JsonObject object = root.getAsJsonObject();
    com.google.gson.JsonElement type = object.get("type");
    if (type == null || !type.isJsonPrimitive() || !type.getAsJsonPrimitive().isString()) {
      return json;
    }
    String name = type.getAsString().trim().toUpperCase(Locale.ROOT);
    if (!name.startsWith("EVENT_TYPE_")
        && EventType.getDescriptor().findValueByName("EVENT_TYPE_" + name) != null) {
      object.addProperty("type", "EVENT_TYPE_" + name);
      return object.toString();
    }
    return json;
  }

  /**
   * The server's checks that one event can fail, made before it joins a batch: a batch is all or
   * nothing, so one bad event must not take the others down with it.
   */
  public static void checkEvent(ListenerEvent event) {
    if (event.getPayloadCase() == ListenerEvent.PayloadCase.PAYLOAD_NOT_SET) {
      throw new IllegalArgumentException("an event needs a payload (server_down … task_fail)");
    }
    FieldDescriptor payload =
        ListenerEvent.getDescriptor().findFieldByNumber(event.getPayloadCase().getNumber());
    EventType expected =
        EventType.valueOf("EVENT_TYPE_" + payload.getName().toUpperCase(Locale.ROOT));
    if (event.getTypeValue() != 0 && event.getType() != expected) {
      throw new IllegalArgumentException(
          "type " + event.getType() + " does not match the payload " + payload.getName());
    }
    if (!event.getId().isEmpty() || event.getSequence() != 0 || event.hasPublishTime()) {
      throw new IllegalArgumentException("id, sequence and publish_time are assigned by the server");
    }
    if (event.getSource().length() > MAX_SOURCE_CHARS) {
      throw new IllegalArgumentException(
          "source is longer than " + MAX_SOURCE_CHARS + " characters");
    }
  }

  /**
   * Takes {@code event} into the buffer; the future completes once the store has it (or fails
   * with a {@link PublishException}). Throws IllegalArgumentException for an event the server
   * would refuse, {@link BufferFullException} per the buffer policy, {@link
   * PublisherClosedException} after {@link #close}.
   */
  public CompletableFuture<PublishResult> publish(ListenerEvent event) {
    checkEvent(event);
    Item item = new Item(event, System.nanoTime());
    lock.lock();
    try {
      if (closing) {
        throw new PublisherClosedException("the publisher is closed");
      }
      if (accepted - resolved >= bufferSize) {
        waitForRoom();
      }
      queue.addLast(item);
      accepted++;
      if (queue.size() == 1 || queue.size() == batchSize) {
        work.signal();
      }
    } finally {
      lock.unlock();
    }
    return item.future;
  }

  /** {@link #publish(ListenerEvent)} of the event's proto3 JSON form. */
  public CompletableFuture<PublishResult> publishJson(String json) {
    return publish(parseEvent(json));
  }

  private void waitForRoom() {
    if (whenFull == WhenFull.FAIL) {
      throw new BufferFullException("the publisher's buffer holds " + bufferSize + " events");
    }
    long left = blockTimeoutNanos;
    boolean interrupted = false;
    try {
      while (accepted - resolved >= bufferSize && !closing) {
        if (left <= 0) {
          throw new BufferFullException(
              "the publisher's buffer stayed full ("
                  + bufferSize
                  + " events) for "
                  + Duration.ofNanos(blockTimeoutNanos));
        }
        try {
          left = room.awaitNanos(left);
        } catch (InterruptedException e) {
          interrupted = true;
          throw new BufferFullException("interrupted while waiting for room in the buffer");
        }
      }
      if (closing) {
        throw new PublisherClosedException("the publisher is closed");
      }
    } finally {
      if (interrupted) {
        Thread.currentThread().interrupt();
      }
    }
  }

  /**
   * Sends what is buffered without waiting out the linger and returns once every event published
   * before the call is acknowledged or failed.
   *
   * @throws TimeoutException after {@code timeout} (the events stay buffered)
   */
  public void flush(Duration timeout) throws InterruptedException, TimeoutException {
    lock.lock();
    try {
      long upto = accepted;
      flushUpto = Math.max(flushUpto, upto);
      work.signal();
      long left = timeout == null ? Long.MAX_VALUE : timeout.toNanos();
      while (resolved < upto) {
        if (left <= 0) {
          throw new TimeoutException((upto - resolved) + " events still unacknowledged");
        }
        left = progress.awaitNanos(left);
      }
    } finally {
      lock.unlock();
    }
  }

  /** {@link #flush(Duration)} with no timeout. */
  public void flush() throws InterruptedException {
    try {
      flush(null);
    } catch (TimeoutException e) {
      throw new IllegalStateException(e);
    }
  }

  /**
   * Stops taking events, waits for the buffered ones (up to {@code timeout}, null for as long as
   * it takes; those still unacknowledged then fail with {@link PublisherClosedException}) and
   * closes the channels. Idempotent.
   */
  public void close(Duration timeout) throws InterruptedException {
    lock.lock();
    try {
      if (closed) {
        return;
      }
      closed = true;
      closing = true;
      room.signalAll();
      work.signal();
    } finally {
      lock.unlock();
    }
    try {
      flush(timeout);
    } catch (TimeoutException e) {
      // What is left fails below.
    } finally {
      sender.interrupt();
      sender.join();
      abandon();
      for (Target target : targets) {
        target.channel.shutdownNow();
      }
      for (Target target : targets) {
        target.channel.awaitTermination(5, TimeUnit.SECONDS);
      }
    }
  }

  /** {@link #close(Duration)} with no timeout: every buffered event is acknowledged or failed. */
  @Override
  public void close() throws InterruptedException {
    close(null);
  }

  public Stats stats() {
    lock.lock();
    try {
      return new Stats(accepted - resolved, sent.get(), retried.get(), failed.get(), batches.get());
    } finally {
      lock.unlock();
    }
  }

  /** Acknowledged events per API server address: where the round robin sent them. */
  public Map<String, Long> sentByTarget() {
    Map<String, Long> out = new LinkedHashMap<>();
    for (Target target : targets) {
      out.put(target.address, target.sent.get());
    }
    return out;
  }

  // -- the sender thread ---------------------------------------------------------------------

  private void run() {
    while (true) {
      List<Item> batch;
      lock.lock();
      try {
        while (true) {
          if (queue.isEmpty()) {
            if (closing) {
              return;
            }
            work.await();
            continue;
          }
          boolean hurry = closing || flushUpto > taken;
          if (queue.size() < batchSize && !hurry) {
            long delay = queue.peekFirst().arrival + lingerNanos - System.nanoTime();
            if (delay > 0) {
              work.awaitNanos(delay);
              continue;
            }
          }
          break;
        }
        batch = take();
        inflight = batch;
      } catch (InterruptedException e) {
        return;
      } finally {
        lock.unlock();
      }
      try {
        send(batch);
      } catch (InterruptedException e) {
        return; // close(timeout) gave up: abandon() fails the in-flight batch
      }
    }
  }

  private List<Item> take() {
    List<Item> batch = new ArrayList<>(Math.min(batchSize, queue.size()));
    Item first = queue.pollFirst();
    batch.add(first);
    long size = first.size;
    while (!queue.isEmpty() && batch.size() < batchSize) {
      size += queue.peekFirst().size;
      if (size > maxBatchBytes) {
        break;
      }
      batch.add(queue.pollFirst());
    }
    taken += batch.size();
    return batch;
  }

  private void send(List<Item> batch) throws InterruptedException {
    PublishEventsRequest.Builder request =
        PublishEventsRequest.newBuilder().setRequestId(UUID.randomUUID().toString());
    for (Item item : batch) {
      request.addEvents(item.event);
    }
    PublishEventsRequest built = request.build();
    long started = System.nanoTime();
    int attempt = 0;
    while (true) {
      Target target = pick(System.nanoTime());
      PublishEventsResponse reply;
      try {
        reply =
            target
                .stub
                .withDeadlineAfter(retry.callTimeout().toNanos(), TimeUnit.NANOSECONDS)
                .publishEvents(built);
      } catch (StatusRuntimeException e) {
        Status status = e.getStatus();
        if (Thread.interrupted()) {
          throw new InterruptedException();
        }
        boolean late =
            retry.giveUpAfter() != null
                && System.nanoTime() - started >= retry.giveUpAfter().toNanos();
        if (!RETRYABLE.contains(status.getCode()) || late) {
          resolve(batch, null, new PublishException(status));
          return;
        }
        attempt++;
        retried.incrementAndGet();
        // Reconnect at this class's pace, not the channel's own (up to two minutes) backoff.
        target.channel.resetConnectBackoff();
        if (status.getCode() == Status.Code.UNAVAILABLE && targets.size() > 1) {
          long now = System.nanoTime();
          target.downUntil = now + downForNanos;
          if (targets.stream().anyMatch(t -> t.downUntil - now <= 0)) {
            continue; // another server is up: go there now
          }
        }
        TimeUnit.NANOSECONDS.sleep(retry.delayNanos(attempt));
        continue;
      }
      if (reply.getEventsCount() != batch.size()) {
        resolve(
            batch,
            null,
            new PublishException(
                Status.INTERNAL.withDescription(
                    reply.getEventsCount() + " results for a batch of " + batch.size())));
        return;
      }
      batches.incrementAndGet();
      target.sent.addAndGet(batch.size());
      resolve(batch, reply, null);
      return;
    }
  }

  /** The next target in round-robin order not marked down; when all are, the first back. */
  private Target pick(long now) {
    int count = targets.size();
    for (int step = 0; step < count; step++) {
      Target target = targets.get((next + step) % count);
      if (target.downUntil - now <= 0) {
        next = (next + step + 1) % count;
        return target;
      }
    }
    Target soonest = targets.get(0);
    for (Target target : targets) {
      if (target.downUntil - soonest.downUntil < 0) {
        soonest = target;
      }
    }
    return soonest;
  }

  private void resolve(List<Item> batch, PublishEventsResponse reply, PublishException error) {
    if (reply != null) {
      sent.addAndGet(batch.size());
    } else {
      failed.addAndGet(batch.size());
    }
    lock.lock();
    try {
      resolved += batch.size();
      inflight = List.of();
      room.signalAll();
      progress.signalAll();
    } finally {
      lock.unlock();
    }
    for (int i = 0; i < batch.size(); i++) {
      if (reply != null) {
        PublishEventResponse stored = reply.getEvents(i);
        batch.get(i).future.complete(new PublishResult(stored.getId(), stored.getSequence()));
      } else {
        batch.get(i).future.completeExceptionally(error);
      }
    }
  }

  /** Fails what close(timeout) could not wait for. */
  private void abandon() {
    List<Item> left = new ArrayList<>();
    lock.lock();
    try {
      left.addAll(inflight);
      left.addAll(queue);
      queue.clear();
      inflight = List.of();
      resolved = accepted;
      room.signalAll();
      progress.signalAll();
    } finally {
      lock.unlock();
    }
    PublisherClosedException error =
        new PublisherClosedException("closed before the store acknowledged this event");
    for (Item item : left) {
      if (item.future.completeExceptionally(error)) {
        failed.incrementAndGet();
      }
    }
  }

  /** Settings of a {@link ListenerPublisher}; the defaults are the Python publisher's. */
  public static final class Builder {
    private final List<String> targets = new ArrayList<>();
    private String token;
    private boolean tls;
    private File tlsCa;
    private File tlsCert;
    private File tlsKey;
    private String tlsServerName;
    private int batchSize = 500;
    private int maxBatchBytes = 4 << 20;
    private Duration linger = Duration.ofMillis(5);
    private int bufferSize = 10_000;
    private WhenFull whenFull = WhenFull.BLOCK;
    private Duration blockTimeout = Duration.ofSeconds(10);
    private RetryPolicy retry = RetryPolicy.DEFAULT;
    private Duration downFor = Duration.ofSeconds(1);

    private Builder() {}

    /** API server addresses, {@code host:port} (several: round robin). */
    public Builder targets(String... addresses) {
      return targets(List.of(addresses));
    }

    public Builder targets(List<String> addresses) {
      for (String address : addresses) {
        for (String one : address.split(",")) {
          if (!one.isBlank()) {
            targets.add(one.strip());
          }
        }
      }
      return this;
    }

    /** Sent as {@code authorization: Bearer <token>} with every call. */
    public Builder token(String token) {
      this.token = token;
      return this;
    }

    /** TLS, trusting the JVM's default roots (or {@link #tlsCa}). */
    public Builder tls(boolean tls) {
      this.tls = tls;
      return this;
    }

    /** TLS, with the CA (PEM) the server's certificate must chain to. */
    public Builder tlsCa(File ca) {
      this.tlsCa = ca;
      return this;
    }

    /** mTLS: the client certificate chain and its PKCS#8 key (PEM). */
    public Builder tlsClientCert(File cert, File key) {
      this.tlsCert = cert;
      this.tlsKey = key;
      return this;
    }

    /** The name to expect in the server's certificate when it differs from the target host. */
    public Builder tlsServerName(String name) {
      this.tlsServerName = name;
      return this;
    }

    public Builder batchSize(int events) {
      this.batchSize = events;
      return this;
    }

    public Builder maxBatchBytes(int bytes) {
      this.maxBatchBytes = bytes;
      return this;
    }

    /** How long a partial batch waits for more events. */
    public Builder linger(Duration linger) {
      this.linger = linger;
      return this;
    }

    /** Events taken and not yet acknowledged, at most. */
    public Builder bufferSize(int events) {
      this.bufferSize = events;
      return this;
    }

    public Builder whenFull(WhenFull policy) {
      this.whenFull = policy;
      return this;
    }

    /** How long {@link WhenFull#BLOCK} waits for room. */
    public Builder blockTimeout(Duration timeout) {
      this.blockTimeout = timeout;
      return this;
    }

    public Builder retry(RetryPolicy policy) {
      this.retry = policy;
      return this;
    }

    /** How long a server that refused a connection is skipped when there are others. */
    public Builder downFor(Duration duration) {
      this.downFor = duration;
      return this;
    }

    public ListenerPublisher build() throws SSLException {
      return new ListenerPublisher(this);
    }
  }
}
