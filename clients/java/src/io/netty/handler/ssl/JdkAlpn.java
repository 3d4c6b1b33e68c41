package io.netty.handler.ssl;

import io.netty.handler.codec.http2.Http2SecurityUtil;
import java.io.File;
import java.util.List;
import javax.net.ssl.SSLException;

/**
 * ALPN on the JDK's own TLS engine (Java 9 and later), for gRPC over TLS with Debian's Netty.
 *
 * <p>Debian builds Netty without {@code JdkAlpnApplicationProtocolNegotiator} (it needs
 * libraries Debian does not ship), so a JDK-provider client context cannot offer "h2" through
 * ALPN and gRPC refuses it. Netty's {@code Java9SslEngine}, which is still there, does exactly
 * that with the JDK's own API; this class, in Netty's package because that engine is
 * package-private, puts it back.
 */
public final class JdkAlpn extends JdkBaseApplicationProtocolNegotiator {
  private JdkAlpn() {
    super(
        (engine, negotiator, isServer) -> new Java9SslEngine(engine, negotiator, isServer),
        FAIL_SELECTOR_FACTORY,
        FAIL_SELECTION_LISTENER_FACTORY,
        List.of("h2"));
  }

  /** Whether this JDK has the ALPN API (every JDK since 9, and late 8 updates). */
  public static boolean available() {
    return Java9SslUtils.supportsAlpn();
  }

  /**
   * A client context that offers "h2": {@code ca} (PEM; null for the JDK's default trust), and
   * {@code cert} with its PKCS#8 {@code key} for mTLS (both null without).
   */
  @SuppressWarnings("deprecation")
  public static SslContext clientContext(File ca, File cert, File key) throws SSLException {
    return new JdkSslClientContext(
        ca,
        null,
        cert,
        key,
        null,
        null,
        Http2SecurityUtil.CIPHERS,
        SupportedCipherSuiteFilter.INSTANCE,
        new JdkAlpn(),
        0,
        0);
  }
}
