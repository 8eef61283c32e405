#!/usr/bin/env python3
"""Regenerates the test certificates in this directory (needs python3-cryptography).

A test CA, a server certificate for localhost, 127.0.0.1 and ::1, and a client certificate,
all ECDSA P-256, valid from 2000 to 2125 so that neither a machine's clock nor time ever makes
them expire. Keys are unencrypted PKCS#8 PEM.
"""
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2125, 1, 1, tzinfo=datetime.timezone.utc)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_key(path, key):
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def write_cert(path, cert):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def usage(sign_certs):
    return x509.KeyUsage(digital_signature=not sign_certs, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=sign_certs, crl_sign=sign_certs, encipher_only=False,
                         decipher_only=False)


def leaf(ca_key, ca_name, cn, ext_usage, sans):
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(usage(False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ext_usage]), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = name("corecache test CA")
ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
      .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
      .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
      .add_extension(usage(True), critical=True)
      .sign(ca_key, hashes.SHA256()))
write_key("ca.key", ca_key)
write_cert("ca.pem", ca)

sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1"))]
key, cert = leaf(ca_key, ca_name, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, sans)
write_key("server.key", key)
write_cert("server.pem", cert)

key, cert = leaf(ca_key, ca_name, "corecache test client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
write_key("client.key", key)
write_cert("client.pem", cert)
