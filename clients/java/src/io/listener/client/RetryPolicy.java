package io.listener.client;

import java.time.Duration;
import java.util.concurrent.ThreadLocalRandom;

/**
 * How a batch is retried after UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED. The n-th
 * wait is {@code initialBackoff * multiplier^(n-1)}, capped at {@code maxBackoff}, scaled by a
 * random factor in {@code [1 - jitter, 1]} so publishers that failed together do not come back
 * together. {@code callTimeout} is each call's deadline; {@code giveUpAfter} (from a batch's first
 * attempt; null: never) fails the batch's futures with the last error.
 */
public record RetryPolicy(
    Duration initialBackoff,
    Duration maxBackoff,
    double multiplier,
    double jitter,
    Duration callTimeout,
    Duration giveUpAfter) {

  /** The defaults, the same as the Python publisher's. */
  public static final RetryPolicy DEFAULT =
      new RetryPolicy(
          Duration.ofMillis(50),
          Duration.ofSeconds(2),
          2.0,
          0.5,
          Duration.ofSeconds(10),
          Duration.ofSeconds(300));

  public RetryPolicy {
    if (initialBackoff.isZero()
        || initialBackoff.isNegative()
        || maxBackoff.compareTo(initialBackoff) < 0) {
      throw new IllegalArgumentException("need 0 < initialBackoff <= maxBackoff");
    }
    if (multiplier < 1 || jitter < 0 || jitter > 1 || callTimeout.isZero()
        || callTimeout.isNegative()) {
      throw new IllegalArgumentException(
          "need multiplier >= 1, 0 <= jitter <= 1 and callTimeout > 0");
    }
  }

  /** The wait before retry number {@code attempt} (1 for the first retry), in nanoseconds. */
  public long delayNanos(int attempt) {
    double base =
        Math.min(
            maxBackoff.toNanos(),
            initialBackoff.toNanos() * Math.pow(multiplier, Math.max(0, attempt - 1)));
    return (long) (base * (1 - jitter * ThreadLocalRandom.current().nextDouble()));
  }
}
