"""Locust users of a flash sale and the hooks they run by; loadtests/locustfile.py hands them to
Locust. Not named `locust`: Locust puts the locustfile's folder on sys.path, where a `locust`
package would shadow the library."""
